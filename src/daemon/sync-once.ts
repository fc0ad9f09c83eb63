import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { SyncContext } from '../sync/context.js';
import { runSync } from '../sync/engine.js';
import type { SyncReport } from '../sync/types.js';
import type { ManifestHolder } from './manifest-holder.js';
import type { DaemonState } from './state.js';
import type { SyncOutcome } from './sync-runner.js';

/**
 * One sync of the manifest in force as the daemon runs it (what SyncRunner runs): followed in
 * `state` (/status, /metrics), its end logged, and its outcome what the requester gets back.
 * `requiredOnly`: the startup phase, before the child may start.
 */
export async function syncOnce(ctx: SyncContext, manifest: ManifestHolder, state: DaemonState, reason: string, signal: AbortSignal, log: Logger, requiredOnly = false): Promise<SyncOutcome> {
  state.syncStarted(reason);
  let report: SyncReport | undefined;
  let error: ModelsyncError | undefined;
  try {
    report = await runSync(ctx, manifest.current, { signal, events: state.events, ...(requiredOnly ? { filter: (e) => e.required } : {}) });
  } catch (e) {
    error = e instanceof ModelsyncError ? e : new ModelsyncError('E_SYNC_FAILED', String(e), { cause: e });
  }
  state.syncFinished(reason, report, error?.message);
  const failed = report?.entries.filter((r) => r.state === 'failed') ?? [];
  if (error) log.error({ reason, err: error.message }, 'sync failed');
  else if (failed.length > 0) log.error({ reason, failed: failed.map((f) => `${f.dest}: ${f.error?.message ?? ''}`) }, 'sync finished with failures');
  else log.info({ reason, entries: report?.entries.length, bytesFetched: report?.bytesFetched, durationMs: Math.round(report?.durationMs ?? 0) }, 'sync finished');
  return {
    ok: report?.ok === true && !error,
    reason,
    report,
    error: error && { code: error.code, message: error.message },
    manifestError: state.manifest?.error,
  };
}
