import { writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { OPTIONS } from './cli-options.js';
import { flagsOf } from './command-flags.js';
import type { WarmAttempt } from './commands/common.js';
import { reportSync } from './commands/sync-report.js';
import { loadConfig, processEnvironment } from './config.js';
import { errnoCode } from './errors.js';
import { lookUpManifest } from './manifest/cache.js';
import type { SyncReport } from './sync/types.js';

/** dist/cli.cjs, which the bin loads through its code cache (bin/load-bundle.js). */
type CliModule = Pick<typeof import('./cli.js'), 'runMain'>;

/**
 * The bin's entry (bundled into dist/modelsync.cjs by `npm run build`). A warm `modelsync sync`
 * (manifest validated before, every entry in place by stat + the state DB) is answered here,
 * from this module's imports alone: on a warm volume the process's life is mostly loading code,
 * and the command registry, the logger, the manifest parser and the download stack are most of
 * it. Every other command, a sync with anything to do, and every error go to cli.ts, which
 * starts over and reports as always. Nothing but plain data crosses to cli.ts: the bundle has
 * its own copies of the modules it shares with dist/, so an `instanceof` across would fail.
 */
export function runMain(argv: readonly string[], loadCli: () => CliModule | Promise<CliModule> = () => import('./cli.js')): void {
  void attemptWarmSync(argv).then(async (attempt) => {
    if (attempt && 'report' in attempt) {
      writeReport(attempt.report, attempt.json);
      return;
    }
    const cli = await loadCli();
    cli.runMain(argv, attempt);
  });
}

/** The warm report, what the full sync must know, or undefined when not tried. */
async function attemptWarmSync(argv: readonly string[]): Promise<{ report: SyncReport; json: boolean } | WarmAttempt | undefined> {
  if (argv[0] !== 'sync') return undefined;
  try {
    const { values } = parseArgs({ args: argv.slice(1), options: OPTIONS, allowPositionals: true, strict: true });
    // --update-lock may rewrite the lock: the full path's; so is a flag sync does not take (refused there).
    if (values.help === true || values['update-lock'] === true) return undefined;
    const takes = flagsOf('sync');
    if (Object.keys(values).some((f) => takes?.has(f) !== true)) return undefined;
    // No progress bar here, and asking process.stderr whether it is a terminal builds its stream.
    const config = loadConfig(values, processEnvironment(), false);
    if (config.manifestPath === undefined) return undefined;
    const lookup = lookUpManifest(config.stateDir, config.manifestPath);
    if (!lookup.cached) return undefined;
    // In the bundle too, but initialised only now: other commands and cache misses skip its SQLite load.
    const { warmSync } = await import('./sync/warm.js');
    const warm = await warmSync(config, lookup.cached);
    return warm.report ? { report: warm.report, json: config.json } : { dbRecreated: warm.dbRecreated };
  } catch (e) {
    // A lock held for the whole busy timeout would be waited for again: handed on as it is.
    if (errnoCode(e) === 'E_STATE_LOCKED') return { stateLocked: e instanceof Error ? e.message : String(e) };
    // Whatever else failed fails again on the full path, which reports it properly.
    return undefined;
  }
}

/**
 * One write(2) on fd 1: process.stdout would build a stream (net, tty or fs, by what fd 1 is)
 * for a few lines. A non-blocking fd that is full (EAGAIN) gets the rest through process.stdout.
 */
function writeReport(report: SyncReport, json: boolean): void {
  const chunks: string[] = [];
  process.exitCode = reportSync({ stdout: { write: (t: string) => chunks.push(t) } }, json, report);
  let rest = Buffer.from(chunks.join(''));
  try {
    while (rest.length > 0) rest = rest.subarray(writeSync(1, rest));
  } catch (e) {
    if (errnoCode(e) === 'EAGAIN') {
      process.stdout.write(rest);
      return;
    }
    process.exitCode = 1;
    writeSync(2, `modelsync: cannot write the report: ${e instanceof Error ? e.message : String(e)}\n`);
  }
}
