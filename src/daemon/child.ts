import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { childOutput } from './child-output.js';
import { comfyUrlFromArgs, probeHealth } from './health-probe.js';
import type { Notifier } from './notify.js';
import type { DaemonState } from './state.js';
import { Supervisor } from './supervisor.js';

export interface ChildSetup {
  readonly config: Config;
  readonly log: Logger;
  readonly clock: Clock;
  readonly command: readonly [string, ...string[]];
  readonly state: DaemonState;
  readonly notify: Notifier;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/** Variables the child must not see even though they are not secrets. */
const NOT_FOR_CHILD = ['NOTIFY_SOCKET'];

/** The supervisor for ComfyUI, wired to the daemon's state, logs and output. */
export function comfySupervisor(s: ChildSetup): Supervisor {
  const d = s.config.daemon;
  const [command, ...args] = s.command;
  const url = d.comfyUrl ?? comfyUrlFromArgs(args);
  s.state.comfy.url = url;
  const env: Record<string, string> = {};
  // ComfyUI (or a custom node) speaking to systemd would be taken for us under NotifyAccess=all.
  for (const [k, v] of Object.entries(s.config.childEnv)) if (!NOT_FOR_CHILD.includes(k)) env[k] = v;
  return new Supervisor({
    command,
    args,
    env,
    restart: d.restart,
    backoff: { initialMs: d.restartBaseMs, maxMs: d.restartMaxMs, stableMs: d.stableMs, degradedAfter: d.degradedAfter, maxRestarts: d.maxRestarts },
    clock: s.clock,
    startupTimeoutMs: d.startupTimeoutMs,
    stopTimeoutMs: d.stopTimeoutMs,
    probeIntervalMs: d.probeIntervalMs,
    probeTimeoutMs: d.probeTimeoutMs,
    probeFailures: d.probeFailures,
    probe: (timeoutMs, signal) => probeHealth(url, timeoutMs, signal),
    log: s.log,
    output: childOutput(d.childLogs, s.stdout, s.log, s.config.secrets),
    events: {
      spawned: (pid) => {
        s.state.childSpawned(pid);
        s.notify.status(`ComfyUI starting (pid ${pid}), waiting for ${url}`);
      },
      answering: (pid) => {
        s.state.childAnswering();
        s.log.info({ childPid: pid, url }, 'ComfyUI is answering');
        if (s.state.requiredReady()) s.notify.ready(`ComfyUI answering on ${url}`);
      },
      unresponsive: (_pid, reason) => {
        s.state.comfy.phase = 'unresponsive';
        s.state.comfy.reason = reason;
      },
      exited: (pid, exit) => {
        // The end of a stop modelsync was asked for (SIGTERM, Ctrl-C) is how a normal run ends: no warning.
        const asked = s.state.comfy.phase === 'stopping';
        s.state.childExited(exit);
        s.log[asked ? 'info' : 'warn']({ childPid: pid, code: exit.code, signal: exit.signal, unresponsive: exit.unresponsive }, 'ComfyUI exited');
      },
      backoff: (delayMs, failures) => {
        s.state.childBackoff(delayMs);
        s.notify.status(`ComfyUI exited; restart ${s.state.comfy.restarts} in ${Math.round(delayMs / 1000)} s (${failures} failures in a row)`);
      },
      gaveUp: (starts) => {
        s.state.comfy.gaveUp = true;
        s.state.comfy.reason = `it never became healthy in ${starts} starts in a row`;
        s.notify.status(`ComfyUI never became healthy in ${starts} starts in a row: gave up`);
      },
      degraded: (degraded) => {
        s.state.comfy.degraded = degraded;
        if (degraded) s.log.error({ restarts: s.state.comfy.restarts }, 'ComfyUI is crash-looping: reporting degraded');
        else s.log.info('ComfyUI is stable again');
        s.notify.status(degraded ? 'degraded: ComfyUI is crash-looping' : `ComfyUI answering on ${url}`);
      },
    },
  });
}
