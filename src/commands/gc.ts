import { access } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { collectGarbage, fmtAge, type GcReport } from '../store/gc.js';
import { openStore } from '../store/layout.js';
import { fmt } from '../sync/plan.js';
import { print, printJson, type CommandIo } from './common.js';

/**
 * `modelsync gc [--dry-run] [--grace-period SECONDS]`: remove store blobs that no live node
 * record references (see src/store/gc.ts for the rules). Needs no manifest and no state DB: it
 * works from what every node wrote into the shared store.
 */
export async function gcCommand(io: CommandIo): Promise<number> {
  const config = loadConfig(io.flags, io.env);
  const log = createLogger(config.logLevel, { format: config.logFormat, color: config.color });
  const dryRun = io.flags['dry-run'] === true;
  try {
    await access(path.join(config.storeDir, 'layout.json'));
  } catch {
    print(io, `gc: no store at ${config.storeDir}; nothing to do`);
    return 0;
  }
  const store = await openStore(config.storeDir, { modelsDir: config.modelsDir });
  const report = await collectGarbage({ store, dryRun, graceMs: config.gc.graceMs, refsMaxAgeMs: config.gc.refsMaxAgeMs, tmpMaxAgeMs: config.gc.tmpMaxAgeMs, log }).finally(() => store.close());
  if (config.json) printJson(io, report);
  else printReport(io, report, config.gc.graceMs);
  return 0;
}

function printReport(io: CommandIo, r: GcReport, graceMs: number): void {
  const verb = r.dryRun ? 'would remove' : 'removed';
  for (const b of r.removed) {
    print(io, `${verb.padEnd(12)} ${b.key} (${fmt(b.size)}), unreferenced for ${fmtAge(b.unreferencedMs)}${b.stillLinked ? '; still hard-linked from a models dir, so its space stays in use until that file goes' : ''}`);
  }
  for (const b of r.pending) print(io, `${'keep'.padEnd(12)} ${b.key} (${fmt(b.size)}): unreferenced, in its grace period for ${fmtAge(b.remainingMs)} more`);
  for (const b of r.inFlight) print(io, `${'keep'.padEnd(12)} ${b.key} (${fmt(b.size)}): ${b.why === 'lease' ? 'a node holds its download lease' : 'a partial download of it is recent'}`);
  for (const t of r.temps) print(io, `${verb.padEnd(12)} ${t.path} (${fmt(t.size)}, untouched for ${fmtAge(t.ageMs)})`);
  for (const l of r.leases) print(io, `${verb.padEnd(12)} ${l.path} (stale lease, no heartbeat for ${fmtAge(l.ageMs)})`);
  if (r.refused !== undefined) print(io, `gc: ${r.refused}`);
  const live = r.records.filter((x) => x.live).length;
  print(
    io,
    `gc${r.dryRun ? ' (dry run)' : ''}: ${verb} ${r.removed.length} blob(s), ${r.temps.length} temp file(s), ${r.leases.length} stale lease(s); ${fmt(r.freedBytes)} ${r.dryRun ? 'would be freed' : 'freed'}; ` +
      `${r.pending.length} unreferenced blob(s) in the ${fmtAge(graceMs)} grace period, ${r.inFlight.length} in flight; ${r.referenced} referenced by ${live} live record(s)${r.records.length > live ? ` (${r.records.length - live} expired)` : ''}`,
  );
}
