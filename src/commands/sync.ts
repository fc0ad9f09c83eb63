import { loadConfig } from '../config.js';
import { ModelsyncError } from '../errors.js';
import { lookUpManifest } from '../manifest/cache.js';
import { abortOnSignals, loadAll, requireManifestPath, type CommandIo } from './common.js';
import { reportSync } from './sync-report.js';

export { printReport } from './sync-report.js';

/**
 * `modelsync sync`: exit 0 only if every entry is present and verified. A warm start (the
 * manifest validated before, every entry in place) is decided by stat + the state DB with only
 * the modules that takes (sync/warm.ts); anything else falls through to the full sync.
 */
export async function syncCommand(io: CommandIo): Promise<number> {
  const config = loadConfig(io.flags, io.env);
  // --update-lock may rewrite the lock: it always takes the full path.
  const lookup = io.flags['update-lock'] === true ? undefined : lookUpManifest(config.stateDir, requireManifestPath(config));
  if (io.warm?.stateLocked !== undefined) throw new ModelsyncError('E_STATE_LOCKED', io.warm.stateLocked);
  let dbRecreated = io.warm?.dbRecreated;
  // The bin's entry (warm-start.ts) tried already when io.warm is set.
  if (lookup?.cached && !io.warm) {
    const { warmSync } = await import('../sync/warm.js');
    const warm = await warmSync(config, lookup.cached);
    if (warm.report) return reportSync(io, config.json, warm.report);
    dbRecreated = warm.dbRecreated;
  }
  const { manifest, ctx } = await loadAll(io, { config, lookup, dbRecreated, createModelsDir: true });
  const stop = abortOnSignals();
  const [{ runSync }, { progressBar }] = await Promise.all([import('../sync/engine.js'), import('../progress.js')]);
  const bar = config.tty && !config.json ? progressBar(process.stderr) : undefined;
  try {
    const report = await runSync(ctx, manifest, { signal: stop.signal, ...(bar ? { events: bar.events } : {}) });
    bar?.done();
    // Write-back runs behind the sync; a one-shot sync waits for it before it exits.
    if (manifest.mirrorWrite === undefined) return reportSync(io, config.json, report);
    await ctx.writeBack.drain();
    return reportSync(io, config.json, report, { to: manifest.mirrorWrite.uri, ...ctx.writeBack.stats });
  } finally {
    bar?.done();
    stop.dispose();
    ctx.close();
  }
}
