import { keyName } from '../content-key.js';
import { placeForSync, unplacedLabel } from '../sync/place.js';
import { buildPlan, fmt } from '../sync/plan.js';
import { settleRemoved } from '../sync/removed.js';
import { removalLine } from './removal-line.js';
import { abortOnSignals, loadAll, print, printJson, type CommandIo } from './common.js';

/** `modelsync plan`: what is present, missing, in the store; bytes to fetch; free space. No byte moves. */
export async function planCommand(io: CommandIo): Promise<number> {
  const { config, manifest: written, ctx } = await loadAll(io);
  const stop = abortOnSignals();
  try {
    // Derived dests (civitai entries written without one) are part of what the plan shows.
    const placement = await placeForSync(ctx, written, stop.signal);
    const manifest = placement.manifest;
    const plan = await buildPlan(ctx, manifest, manifest.entries, stop.signal);
    const free = plan.freeBytes - plan.othersPendingBytes;
    const fits = plan.bytesToFetch <= free;
    const rows = [
      ...plan.present.map((p) => ({ index: p.entry.index, dest: p.entry.dest, action: 'present', size: p.size })),
      ...plan.jobs.flatMap((j) =>
        j.entries.map((e) => ({ index: e.index, dest: e.dest, action: plan.inStore.has(keyName(j.key)) ? 'publish' : 'fetch', size: j.file.size ?? j.file.sizeHint })),
      ),
      ...plan.failed.map((f) => ({ index: f.entry.index, dest: f.entry.dest, action: 'error', error: f.error.message })),
      ...placement.failed.map((f) => ({ index: f.entry.index, dest: unplacedLabel(f.entry), action: 'error', error: f.error.message })),
    ].sort((a, b) => a.index - b.index);
    const removed = await settleRemoved(ctx, manifest, { dryRun: true, unplacedSources: new Set(placement.failed.map((f) => f.entry.source.uri)) });
    if (config.json) {
      printJson(io, { entries: rows, removed, bytesToFetch: plan.bytesToFetch, freeBytes: plan.freeBytes, othersPendingBytes: plan.othersPendingBytes, fits });
    } else {
      for (const r of rows) {
        const extra = 'error' in r ? `: ${r.error}` : r.size === undefined ? '' : ` (${fmt(r.size)})`;
        print(io, `${r.action.padEnd(8)} ${r.dest}${extra}`);
      }
      for (const r of removed) print(io, removalLine(r, 'sync'));
      print(io, `to fetch: ${fmt(plan.bytesToFetch)} in ${plan.jobs.length - plan.inStore.size} blob(s); free: ${fmt(free)}${fits ? '' : ' -- DOES NOT FIT'}`);
    }
    return fits && plan.failed.length === 0 && placement.failed.length === 0 ? 0 : 1;
  } finally {
    stop.dispose();
    ctx.close();
  }
}
