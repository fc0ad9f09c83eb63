import path from 'node:path';
import type { Entry } from '../manifest/types.js';
import type { ContentKey } from '../sources/source.js';
import { sameStamp, stampOf } from '../store/blobs.js';
import type { SyncContext } from './context.js';

const COMMIT = /^[0-9a-f]{40}$/;

/**
 * Is this entry already in place, decided by stat and the state DB alone (no network, no model
 * byte read)? True when the dest was published and verified for this same source, and its
 * dev/inode/size/mtime have not changed since.
 */
export async function presentLocally(ctx: SyncContext, entry: Entry): Promise<{ key: ContentKey; size: number } | undefined> {
  const rec = ctx.db.entry(entry.dest);
  if (!rec || rec.source !== entry.source.uri) return undefined;
  if (entry.sha256 !== undefined && (rec.key.algo !== 'sha256' || rec.key.hex !== entry.sha256)) return undefined;
  if (entry.size !== undefined && rec.size !== entry.size) return undefined;
  // A lock moved to other content (e.g. `lock --refresh` pinned a newer commit of a branch).
  if (entry.pinned !== undefined && (rec.key.algo !== entry.pinned.algo || rec.key.hex !== entry.pinned.hex)) return undefined;
  // --refresh asks the Hub whether a branch moved; a commit cannot move.
  if (ctx.config.refresh && !ctx.config.hf.offline && entry.source.kind === 'hf' && !COMMIT.test(entry.source.revision)) return undefined;
  const final = path.join(ctx.config.modelsDir, entry.dest);
  const [stamp, verified] = [await stampOf(final), ctx.db.verifiedStamp(final)];
  if (!stamp || !verified || !sameStamp(stamp, verified)) return undefined;
  if (verified.algo !== rec.key.algo || verified.hex !== rec.key.hex) return undefined;
  return { key: rec.key, size: rec.size };
}
