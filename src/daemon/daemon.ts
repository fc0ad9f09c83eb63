import { setMaxListeners } from 'node:events';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { systemClock, type Clock } from '../clock.js';
import type { Config } from '../config.js';
import { ModelsyncError } from '../errors.js';
import { checkGateSetup, gateModels, startDaemonGate } from '../gate/daemon-gate.js';
import type { Gate } from '../gate/gate.js';
import type { Logger } from '../log.js';
import type { SyncContext } from '../sync/context.js';
import { prepareModelsDir } from '../models-dir.js';
import { openWithManifest } from '../sync/open-with-manifest.js';
import { comfySupervisor } from './child.js';
import { comfyUrlFromArgs } from './health-probe.js';
import { waitForFreePort } from './port-holder.js';
import { OnDemand } from '../ondemand/on-demand.js';
import type { OnDemandService } from '../ondemand/service.js';
import { startControl, type ControlServer } from './control.js';
import { ManifestHolder } from './manifest-holder.js';
import { systemdNotifier } from './notify.js';
import { DaemonState } from './state.js';
import { runExitCode, stopCode } from './exit-code.js';
import type { Supervisor, SupervisionEnd } from './supervisor.js';
import { SyncRunner, type SyncOutcome } from './sync-runner.js';
import { syncOnce } from './sync-once.js';
import type { ManifestWatch } from './watch.js';

export interface DaemonOptions {
  readonly config: Config;
  readonly log: Logger;
  readonly manifestPath: string;
  /** --update-lock: re-pin entries that drifted from the lock file before the first sync. */
  readonly updateLock: boolean;
  /** CMD ARGS; empty: the node-level service mode (sync, watch, serve; no child). */
  readonly command: readonly string[];
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly clock?: Clock;
}

export interface Daemon {
  readonly state: DaemonState;
  readonly controlUrl: string;
  /** Models on demand (POST /models, the gate): see src/ondemand/service.ts. */
  readonly onDemand: OnDemandService;
  /** The exit code once stopped; rejects when the required models cannot be had. */
  readonly done: Promise<number>;
  /** As SIGTERM does: stop syncing, stop the child, resolve `done`. */
  stop(): void;
}

/**
 * `modelsync run`: required models first, then the child (never before), the rest in the
 * background, the manifest watched, the control API served. Resolves once the control API
 * listens; `done` carries the rest.
 */
export async function startDaemon(o: DaemonOptions): Promise<Daemon> {
  const { config, log } = o;
  const clock = o.clock ?? systemClock;
  const mode = o.command.length > 0 ? 'entrypoint' : 'service';
  checkGateSetup(config, o.command);
  const state = new DaemonState(mode);
  if (process.pid === 1) log.warn('running as PID 1: orphaned processes will not be reaped; run under an init such as tini (docker run --init)');
  const halt = new AbortController();
  setMaxListeners(0, halt.signal);
  const { manifest, ctx } = await loadManifest(o, state, clock, halt.signal);
  state.mark('manifestLoaded');
  // --refresh semantics for resync requests: branch revisions are asked again. Only
  // presentLocally reads config.refresh, through ctx.config.
  const refreshCtx: SyncContext = { ...ctx, config: Object.freeze({ ...config, refresh: true }) };
  const notify = systemdNotifier(config.daemon.notifySocket, config.childEnv, log);
  const runner = new SyncRunner((reason, refresh, requiredOnly) => syncOnce(refresh ? refreshCtx : ctx, manifest, state, reason, halt.signal, log, requiredOnly));
  const resync = async (why: string, refresh: boolean): Promise<SyncOutcome> => {
    await manifest.reload(why);
    return runner.request(why, refresh);
  };
  const onDemand = new OnDemand({ ctx, manifest: () => manifest.current, signal: halt.signal, events: state.events });
  state.onDemand = () => ({ ...onDemand.status(), requests: onDemand.requestCounts });
  let control: ControlServer;
  let gate: Gate | undefined;
  try {
    const onDisk = (dest: string): Promise<boolean> =>
      stat(path.join(config.modelsDir, dest)).then(
        (st) => st.isFile(),
        () => false,
      );
    control = await startControl(config.control, { state, resync: () => resync('resync requested', true), checkServed: () => state.checkServed(onDisk), onDemand }, log);
  } catch (e) {
    ctx.close();
    throw e;
  }
  try {
    // Before the first sync: clients meet a 503 with Retry-After, never a refused connection.
    gate = await startDaemonGate(config, o.command, state, log, gateModels(onDemand, () => manifest.current, config.hf.endpoint));
    state.gate = gate?.stats;
  } catch (e) {
    await control.close();
    ctx.close();
    throw e;
  }

  let child: Supervisor | undefined;
  let watch: ManifestWatch | undefined;
  let signalled: NodeJS.Signals | undefined;
  let stopRequested: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stopRequested = resolve));
  const stop = (sig?: NodeJS.Signals): void => {
    if (halt.signal.aborted) {
      // A second Ctrl-C: no more patience for the child.
      if (sig) child?.kill();
      return;
    }
    signalled = sig;
    log.info({ signal: sig }, 'stopping');
    state.comfy.phase = state.comfy.pid === undefined ? state.comfy.phase : 'stopping';
    halt.abort(new ModelsyncError('E_ABORTED', `stopping${sig ? ` on ${sig}` : ''}`));
    child?.stop();
    stopRequested();
  };
  const onStop = (sig: NodeJS.Signals): void => stop(sig);
  const onHup = (): void => {
    log.info('SIGHUP: re-reading the manifest');
    void resync('SIGHUP', false);
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHup);

  const main = async (): Promise<number> => {
    notify.status('syncing required models');
    if (mode === 'entrypoint') state.comfy.phase = 'waiting-for-models';
    const first = await runner.request('startup: required models', false, true);
    if (halt.signal.aborted) return stopCode(mode, signalled);
    if (!first.ok) throw requiredFailure(first);
    state.mark('requiredReady');
    log.info({ seconds: state.timeline.requiredReady }, 'required models ready');
    let childDone: Promise<SupervisionEnd> | undefined;
    if (o.command.length > 0) {
      await comfyPortFree(config, o.command, log, halt.signal);
      if (halt.signal.aborted) return stopCode(mode, signalled);
      child = comfySupervisor({ config, log, clock, command: o.command as [string, ...string[]], state, notify, stdout: o.stdout, stderr: o.stderr });
      childDone = child.run();
    }
    // The rest (optional entries) in the background: ComfyUI sees each one once it is verified.
    const full = runner.request('startup: all models');
    void full.then((r) => {
      if (mode === 'service') notify.ready(summary(state, r));
    });
    const onManifestEvent = async (): Promise<void> => {
      if (await manifest.reload('manifest changed')) await runner.request('manifest changed');
    };
    watch = await startWatch(manifest, config, log, onManifestEvent);
    // An edit made between the first read and the watch being in place would go unnoticed.
    void onManifestEvent().catch((e: unknown) => log.error({ err: String(e) }, 'resync after a manifest change failed'));
    if (childDone) {
      // The child's end (by policy, or our stop) ends the daemon.
      const end = await childDone;
      if (!halt.signal.aborted) stop();
      return state.comfy.lastExit === undefined && signalled ? stopCode(mode, signalled) : runExitCode(end);
    }
    await stopped;
    return stopCode(mode, signalled);
  };

  const done = main().finally(async () => {
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
    process.off('SIGHUP', onHup);
    if (!halt.signal.aborted) halt.abort(new ModelsyncError('E_ABORTED', 'stopping'));
    child?.stop();
    await watch?.close().catch(() => undefined);
    // Partials and journals stay on disk, resumable; wait for the sync to let go of them.
    await runner.close();
    await gate?.close();
    await onDemand.drain();
    await control.close();
    ctx.close();
  });
  return { state, controlUrl: control.url, onDemand, done, stop: () => stop() };
}

/** The manifest (a bad one exits 2 before anything is opened) and the sync context. */
async function loadManifest(o: DaemonOptions, state: DaemonState, clock: Clock, signal: AbortSignal): Promise<{ manifest: ManifestHolder; ctx: SyncContext }> {
  const { config, log } = o;
  const { manifest, files, ctx } = await openWithManifest(config, log, o.manifestPath, { updateLock: o.updateLock, clock, signal, beforeOpen: () => prepareModelsDir(config, (what) => log.info({ dir: config.modelsDir }, what), true) });
  return { manifest: new ManifestHolder(manifest, files, config.stateDir, state, log), ctx };
}

async function startWatch(manifest: ManifestHolder, config: Config, log: Logger, onChange: () => Promise<void>): Promise<ManifestWatch | undefined> {
  try {
    const { watchManifest } = await import('./watch.js');
    return await watchManifest(manifest.watched, config.daemon.watchDebounceMs, () => void onChange().catch((e: unknown) => log.error({ err: String(e) }, 'resync after a manifest change failed')), log);
  } catch (e) {
    log.warn({ err: e instanceof Error ? e.message : String(e) }, 'cannot watch the manifest; SIGHUP or `modelsync resync` pick up changes');
    return undefined;
  }
}

/**
 * The port ComfyUI will bind, from its own argv, must be free (port-holder.ts). With --comfy-url
 * the caller took over the addressing (a proxy may answer there before ComfyUI runs): no check.
 */
async function comfyPortFree(config: Config, command: readonly string[], log: Logger, signal: AbortSignal): Promise<void> {
  if (config.daemon.comfyUrl !== undefined) return;
  const url = new URL(comfyUrlFromArgs(command.slice(1)));
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  // A previous daemon's guardian gives its child the stop timeout before SIGKILL.
  const waitMs = config.daemon.stopTimeoutMs + 2000;
  await waitForFreePort({ host: url.hostname.replace(/^\[|\]$/g, ''), port, waitMs, secrets: config.secrets, log, signal });
}

function requiredFailure(o: SyncOutcome): ModelsyncError {
  const failed = o.report?.entries.filter((e) => e.state === 'failed') ?? [];
  const lines = failed.map((e) => `  ${e.dest}: ${e.error?.message ?? 'failed'}`);
  const what = o.error ? o.error.message : `${failed.length} required model${failed.length === 1 ? '' : 's'} could not be had`;
  return new ModelsyncError('E_SYNC_FAILED', [`not starting: ${what}`, ...lines].join('\n'));
}

function summary(state: DaemonState, r: SyncOutcome): string {
  const all = [...state.entries.values()];
  return `${all.filter((e) => e.verified).length}/${all.length} entries verified${r.ok ? '' : ' (last sync had failures)'}`;
}
