import path from 'node:path';
import type { Entry } from '../manifest/types.js';
import type { ContentKey } from '../content-key.js';
import type { FileStamp } from '../state/db.js';
import { PublishedTable } from '../state/published-table.js';
import { blobStampOf, sameStamp, stampOf } from '../store/blobs.js';
import { blobPath } from '../store/layout.js';
import { quarantineBlob } from '../store/quarantine.js';
import { abortOnSignals, loadAll, print, printJson, type CommandIo } from './common.js';
import type { SyncContext } from '../sync/context.js';
import type { Manifest } from '../manifest/types.js';
import { hashFile } from '../transfer/verify.js';
import { placeFromCache, unplacedLabel } from '../sync/place.js';

type VerifyState = 'ok' | 'missing' | 'unverified' | 'corrupt' | 'repaired' | 'unknown-hash';

/**
 * `modelsync verify`: stat-level by default (dev/inode/size/mtime/ctime against the state DB);
 * `--full` re-hashes every published file and rebuilds the state DB from what it finds. A file
 * --full finds corrupt is repaired: its blob (when the file is a hard link to it, the same bytes)
 * goes to quarantine, and the entry is synced again; it counts as verified only once its bytes
 * are right again.
 */
export async function verifyCommand(io: CommandIo): Promise<number> {
  const { config, manifest: written, ctx } = await loadAll(io);
  const full = io.flags.full === true;
  const stop = abortOnSignals();
  try {
    const rows: { index: number; dest: string; state: VerifyState; detail?: string }[] = [];
    const placement = placeFromCache(ctx.db, written);
    const manifest = placement.manifest;
    const published = new PublishedTable(ctx.db, config.modelsDir);
    for (const e of manifest.unplaced) rows.push({ index: e.index, dest: unplacedLabel(e), state: 'missing', detail: 'its dest is derived from Civitai on the first sync' });
    for (const f of placement.failed) rows.push({ index: f.entry.index, dest: unplacedLabel(f.entry), state: 'missing', detail: f.error.message });
    for (const e of manifest.entries) {
      const final = path.join(config.modelsDir, e.dest);
      const st = await stampOf(final);
      if (!st) {
        rows.push({ index: e.index, dest: e.dest, state: 'missing' });
        continue;
      }
      const rec = published.row(e.dest, manifest.path);
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
          published.put(manifest.path, e.dest, e.source.uri, key, h.size);
        });
        rows.push({ index: e.index, dest: e.dest, state: 'ok' });
      } else {
        ctx.db.forgetVerified(final);
        await quarantineShared(ctx, key, st);
        rows.push({ index: e.index, dest: e.dest, state: 'corrupt', detail: `${key.algo} expected ${key.hex}, got ${h.hex}` });
      }
    }
    const corrupt = new Map(rows.filter((r) => r.state === 'corrupt').map((r) => [r.index, r]));
    if (corrupt.size > 0) {
      const { runSync } = await import('../sync/engine.js');
      const report = await runSync(ctx, manifest, { signal: stop.signal, filter: (e) => corrupt.has(e.index) });
      for (const r of report.entries) {
        const row = corrupt.get(r.index);
        if (!row) continue;
        if (r.state === 'failed') row.detail = `${row.detail ?? ''}; could not fetch it again: ${r.error?.message ?? 'unknown error'}`;
        else Object.assign(row, { state: 'repaired', detail: `was corrupt (${row.detail ?? ''}); fetched again` });
      }
    }
    rows.sort((a, b) => a.index - b.index);
    if (config.json) printJson(io, { full, entries: rows });
    else {
      for (const r of rows) print(io, `${r.state.padEnd(12)} ${r.dest}${r.detail ? `: ${r.detail}` : ''}`);
      print(io, `${rows.filter((r) => r.state === 'ok' || r.state === 'repaired').length}/${rows.length} verified${full ? ' (full re-hash)' : ' (stat level; --full re-hashes)'}`);
    }
    return rows.every((r) => r.state === 'ok' || r.state === 'repaired') ? 0 : 1;
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

/**
 * A published hard link is the blob's inode: a corrupt file that is one means a corrupt blob,
 * which must not be published again. A copy or symlink leaves the blob to the sync's own check.
 */
async function quarantineShared(ctx: SyncContext, key: ContentKey, file: FileStamp): Promise<void> {
  const blob = blobPath(ctx.store, key);
  const b = await blobStampOf(blob);
  if (!b || b.dev !== file.dev || b.ino !== file.ino) return;
  ctx.db.forgetVerified(blob);
  const aside = await quarantineBlob(ctx.store, key, b);
  ctx.log.error({ blob, quarantine: aside }, 'store blob does not match its address; moved to quarantine');
}
