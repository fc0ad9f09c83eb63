import { loadControlConfig } from '../config.js';
import { controlRequest, daemonJson } from '../daemon/client.js';
import type { SyncOutcome } from '../daemon/sync-runner.js';
import { ModelsyncError } from '../errors.js';
import { print, printJson, type CommandIo } from './common.js';
import { printReport, syncCommand } from './sync.js';

/**
 * `modelsync resync`: ask the running daemon (found through --control / MODELSYNC_CONTROL) to
 * re-read the manifest and sync now, with branch revisions asked again, and print the outcome.
 * With no daemon answering, the same sync runs in this process (which then needs the models dir
 * and the manifest).
 */
export async function resyncCommand(io: CommandIo): Promise<number> {
  // The daemon knows its models dir and manifest: --control (or MODELSYNC_CONTROL) is enough.
  const config = loadControlConfig(io.flags, io.env);
  // The daemon's sync follows its own `run --keep-removed`: a flag it would not see must not
  // look as if it had been obeyed.
  if (io.flags['keep-removed'] === true && (await controlRequest(config, 'GET', '/healthz')) !== undefined) {
    throw new ModelsyncError('E_USAGE', `--keep-removed applies to an in-process resync only; the daemon on ${config.control.host}:${config.control.port} follows its own setting (modelsync run --keep-removed, MODELSYNC_KEEP_REMOVED)`);
  }
  const answer = await controlRequest(config, 'POST', '/resync');
  if (answer === undefined) {
    io.stderr.write(`modelsync: no daemon answers on ${config.control.host}:${config.control.port}; syncing in-process\n`);
    return syncCommand({ ...io, flags: { ...io.flags, refresh: true } });
  }
  const outcome = daemonJson<SyncOutcome>(answer);
  if (typeof outcome.ok !== 'boolean') throw new ModelsyncError('E_DAEMON', `${answer.url} answered HTTP ${answer.status} without a sync outcome`);
  if (config.json) printJson(io, outcome);
  else {
    print(io, `resync by the daemon at ${answer.url}`);
    if (outcome.manifestError !== undefined) print(io, `the manifest on disk was rejected; the last valid one was synced:\n${outcome.manifestError}`);
    if (outcome.report) printReport(io, outcome.report);
    if (outcome.error) print(io, `FAILED: ${outcome.error.message}`);
  }
  // A rejected manifest edit is the operator's to fix, even when the old manifest synced fine.
  if (outcome.manifestError !== undefined) return 2;
  return outcome.ok ? 0 : 1;
}
