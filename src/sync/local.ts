import { statSync } from 'node:fs';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import type { Entry } from '../manifest/types.js';
import type { ContentKey } from '../content-key.js';
import type { FileStamp } from '../state/db.js';
import { PublishedTable } from '../state/published-table.js';
import { sameStamp, stampFrom, stampOf } from '../store/blobs.js';
import type { SyncContext } from './context.js';

const COMMIT = /^[0-9a-f]{40}$/;

/** All the local check needs: a warm start decides before the rest of the context exists. */
export type LocalView = Pick<SyncContext, 'config' | 'db'>;

type Present = { key: ContentKey; size: number } | undefined;

/**
 * Is this entry already in place, decided by stat and the state DB alone (no network, no model
 * byte read)? True when the dest was published and verified for this same source, and its
 * dev/inode/size/mtime/ctime have not changed since. `manifest`: the manifest's path, whose own
 * row for the dest is asked first (another manifest's, for the same source, does as well).
 */
export async function presentLocally(ctx: LocalView, entry: Entry, manifest: string): Promise<Present> {
  const rec = recorded(ctx, entry, manifest);
  return rec && unchanged(ctx, rec, await stampOf(rec.final));
}

/**
 * The same decision with a synchronous stat: a warm start asks it of every entry back to back,
 * and a thread-pool round trip per entry would cost more than the stat itself.
 */
export function presentLocallySync(ctx: LocalView, entry: Entry, manifest: string): Present {
  const rec = recorded(ctx, entry, manifest);
  return rec && unchanged(ctx, rec, stampOfSync(rec.final));
}

interface Recorded {
  readonly final: string;
  readonly key: ContentKey;
  readonly size: number;
}

/** The state DB's half: the dest's record, when it still matches the entry. */
function recorded(ctx: LocalView, entry: Entry, manifest: string): Recorded | undefined {
  const rec = new PublishedTable(ctx.db, ctx.config.modelsDir).row(entry.dest, manifest);
  if (!rec || rec.source !== entry.source.uri) return undefined;
  if (entry.sha256 !== undefined && (rec.key.algo !== 'sha256' || rec.key.hex !== entry.sha256)) return undefined;
  if (entry.size !== undefined && rec.size !== entry.size) return undefined;
  // A lock moved to other content (e.g. `lock --refresh` pinned a newer commit of a branch).
  if (entry.pinned !== undefined && (rec.key.algo !== entry.pinned.algo || rec.key.hex !== entry.pinned.hex)) return undefined;
  // --refresh asks the Hub whether a branch moved; a commit cannot move.
  if (ctx.config.refresh && !ctx.config.hf.offline && entry.source.kind === 'hf' && !COMMIT.test(entry.source.revision)) return undefined;
  return { final: path.join(ctx.config.modelsDir, entry.dest), key: rec.key, size: rec.size };
}

/** The file's half: the stamp recorded when it was verified is the one it has now. */
function unchanged(ctx: LocalView, rec: Recorded, stamp: FileStamp | undefined): Present {
  const verified = stamp && ctx.db.verifiedStamp(rec.final);
  if (!stamp || !verified || !sameStamp(stamp, verified)) return undefined;
  if (verified.algo !== rec.key.algo || verified.hex !== rec.key.hex) return undefined;
  return { key: rec.key, size: rec.size };
}

function stampOfSync(file: string): FileStamp | undefined {
  try {
    const s = statSync(file, { bigint: true });
    if (!s.isFile()) return undefined;
    return stampFrom(s);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw e;
  }
}
