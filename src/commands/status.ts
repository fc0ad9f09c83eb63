import path from 'node:path';
import { sameStamp, stampOf } from '../store/blobs.js';
import { placeFromCache, unplacedLabel } from '../sync/place.js';
import { settleRemoved } from '../sync/removed.js';
import { PublishedTable } from '../state/published-table.js';
import { removalLine } from './removal-line.js';
import { fmt } from '../sync/plan.js';
import { loadAll, print, printJson, type CommandIo } from './common.js';
import { daemonStatus } from './daemon-status.js';

/** The daemon's vocabulary (DaemonState's StatusState) for what stat and the state DB can tell. */
export type LocalState = 'present' | 'changed' | 'missing';

/** `modelsync status`: per entry, what the models dir and state DB hold (stat only, no network). */
export async function statusCommand(io: CommandIo): Promise<number> {
  // A running daemon knows more (downloads in progress, ComfyUI): ask it first.
  const remote = await daemonStatus(io);
  if (remote !== undefined) return remote;
  const { config, manifest: written, ctx } = await loadAll(io);
  try {
    // Stat and the state DB only: a civitai entry never resolved here has no dest yet.
    const placement = placeFromCache(ctx.db, written);
    const manifest = placement.manifest;
    const rows = [];
    for (const e of [...manifest.unplaced, ...placement.failed.map((f) => f.entry)]) {
      rows.push({ index: e.index, dest: unplacedLabel(e), source: e.source.uri, required: e.required, state: 'never-synced' as LocalState, size: undefined, hash: undefined, syncedAt: undefined });
    }
    const published = new PublishedTable(ctx.db, config.modelsDir);
    for (const e of manifest.entries) {
      const rec = published.row(e.dest, manifest.path);
      const final = path.join(config.modelsDir, e.dest);
      const st = await stampOf(final);
      const v = ctx.db.verifiedStamp(final);
      let state: LocalState;
      if (!st) state = 'missing';
      // A file that was never synced for this source is not the entry's either.
      else state = rec && rec.source === e.source.uri && v && sameStamp(st, v) ? 'present' : 'changed';
      rows.push({ index: e.index, dest: e.dest, source: e.source.uri, required: e.required, state, size: st?.size, hash: rec ? `${rec.key.algo}:${rec.key.hex}` : undefined, syncedAt: rec ? new Date(rec.updatedAt).toISOString() : undefined });
    }
    rows.sort((a, b) => a.index - b.index);
    // What the next sync does with dests this manifest published and no longer names.
    const removed = await settleRemoved(ctx, manifest, { dryRun: true, unplacedSources: new Set(placement.failed.map((f) => f.entry.source.uri)) });
    if (config.json) printJson(io, { modelsDir: config.modelsDir, storeDir: config.storeDir, entries: rows, removed });
    else {
      for (const r of rows) print(io, `${r.state.padEnd(12)} ${r.dest}${r.size === undefined ? '' : ` (${fmt(r.size)})`}${r.required ? '' : ' [optional]'}`);
      for (const r of removed) print(io, removalLine(r, 'next sync'));
      const ok = rows.filter((r) => r.state === 'present').length;
      print(io, `${ok}/${rows.length} present and verified${removed.length === 0 ? '' : `; ${removed.length} no longer in the manifest`}`);
    }
    return rows.every((r) => r.state === 'present') ? 0 : 1;
  } finally {
    ctx.close();
  }
}
