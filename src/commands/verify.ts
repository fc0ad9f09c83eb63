import path from 'node:path';
import type { Entry } from '../manifest/types.js';
import type { ContentKey } from '../content-key.js';
import { sameStamp, stampOf } from '../store/blobs.js';
import { abortOnSignals, loadAll, print, printJson, type CommandIo } from './common.js';
import type { SyncContext } from '../sync/context.js';
import type { Manifest } from '../manifest/types.js';
import { hashFile } from '../transfer/verify.js';

type VerifyState = 'ok' | 'missing' | 'unverified' | 'corrupt' | 'unknown-hash';

/**
 * `modelsync verify`: stat-level by default (dev/inode/size/mtime against the state DB);
 * `--full` re-hashes every published file and rebuilds the state DB from what it finds.
 */
export async function verifyCommand(io: CommandIo): Promise<number> {
  const { config, manifest, ctx } = await loadAll(io);
  const full = io.flags.full === true;
  const stop = abortOnSignals();
  try {
    const rows: { index: number; dest: string; state: VerifyState; detail?: string }[] = [];
    for (const e of manifest.entries) {
      const final = path.join(config.modelsDir, e.dest);
      const st = await stampOf(final);
      if (!st) {
        rows.push({ index: e.index, dest: e.dest, state: 'missing' });
        continue;
      }
      const rec = ctx.db.entry(e.dest);
      const v = ctx.db.verifiedStamp(final);
      if (!full) {
        const ok = rec !== undefined && rec.source === e.source.uri && v !== undefined && sameStamp(st, v) && v.hex === rec.key.hex;
        rows.push({ index: e.index, dest: e.dest, state: ok ? 'ok' : 'unverified' });
        continue;
      }
      const key = await expectedKey(ctx, manifest, e, rec?.source === e.source.uri ? rec.key : undefined, stop.signal);
      if (!key) {
        rows.push({ index: e.index, dest: e.dest, state: 'unknown-hash', detail: 'cannot tell what it should hash to (resolve failed)' });
        continue;
      }
      const h = await hashFile(final, key.algo);
      if (h.hex === key.hex) {
        ctx.db.transaction(() => {
          ctx.db.putVerified(final, st, key);
          ctx.db.putEntry(e.dest, e.source.uri, key, h.size, 'published');
        });
        rows.push({ index: e.index, dest: e.dest, state: 'ok' });
      } else {
        ctx.db.forgetVerified(final);
        rows.push({ index: e.index, dest: e.dest, state: 'corrupt', detail: `${key.algo} expected ${key.hex}, got ${h.hex}` });
      }
    }
    if (config.json) printJson(io, { full, entries: rows });
    else {
      for (const r of rows) print(io, `${r.state.padEnd(12)} ${r.dest}${r.detail ? `: ${r.detail}` : ''}`);
      print(io, `${rows.filter((r) => r.state === 'ok').length}/${rows.length} verified${full ? ' (full re-hash)' : ' (stat level; --full re-hashes)'}`);
    }
    return rows.every((r) => r.state === 'ok') ? 0 : 1;
  } finally {
    stop.dispose();
    ctx.close();
  }
}

async function expectedKey(ctx: SyncContext, manifest: Manifest, e: Entry, known: ContentKey | undefined, signal: AbortSignal): Promise<ContentKey | undefined> {
  if (known) return known;
  if (e.sha256 !== undefined) return { algo: 'sha256', hex: e.sha256 };
  try {
    const source = await ctx.sourceFor(e.source.kind, manifest);
    const [f] = await source.resolve([e], signal);
    return f?.key;
  } catch (err) {
    ctx.log.warn({ dest: e.dest, err: String(err) }, 'cannot resolve expected hash');
    return undefined;
  }
}
