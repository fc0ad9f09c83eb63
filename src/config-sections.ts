import type { Flags } from './cli-options.js';
import { intSetting, parseHostPort, secondsSetting, sizeSetting, truthy } from './config-values.js';
import { ModelsyncError } from './errors.js';

/** The settings of `modelsync run` and `modelsync gc`, read from flags and the env given to them. */

export type RestartPolicy = 'always' | 'on-failure' | 'never';

/** ComfyUI's output: passed through on our stdout as it is, or wrapped into our JSON log records. */
export type ChildLogs = 'passthrough' | 'json';

export interface GcSettings {
  /** A blob is collected only after it has been unreferenced (and untouched) this long. */
  graceMs: number;
  /** A node's reference record older than this is dead: its node is gone or stopped syncing. */
  refsMaxAgeMs: number;
  /** Partials, journals, temp files and leases untouched this long are orphans. */
  tmpMaxAgeMs: number;
}

const DAY_S = 86_400;

export function gcSettings(flags: Flags, env: NodeJS.ProcessEnv): GcSettings {
  return {
    graceMs: secondsSetting('--grace-period', flags['grace-period'] ?? env.MODELSYNC_GC_GRACE_PERIOD, DAY_S * 1000),
    refsMaxAgeMs: secondsSetting('MODELSYNC_GC_REFS_MAX_AGE', env.MODELSYNC_GC_REFS_MAX_AGE, 30 * DAY_S * 1000),
    tmpMaxAgeMs: secondsSetting('MODELSYNC_GC_TMP_MAX_AGE', env.MODELSYNC_GC_TMP_MAX_AGE, DAY_S * 1000),
  };
}

export interface DaemonSettings {
  /** Base URL of the child's HTTP API; undefined: derived from its --listen/--port argv. */
  comfyUrl: string | undefined;
  /** The child must answer GET /system_stats within this; 0: do not probe it at all. */
  startupTimeoutMs: number;
  /** SIGTERM to the child's process group, then SIGKILL after this. */
  stopTimeoutMs: number;
  restart: RestartPolicy;
  restartBaseMs: number;
  restartMaxMs: number;
  /** A child up this long is stable: the backoff and the degraded state reset. */
  stableMs: number;
  /** Failed starts in a row after which the daemon reports degraded. */
  degradedAfter: number;
  /** A health probe starts this often (start to start) once the child has answered. */
  probeIntervalMs: number;
  /** One probe's time to answer; with the interval and misses, a hang is declared (misses - 1) x interval + timeout after the first unanswered probe. */
  probeTimeoutMs: number;
  /** Unanswered probes in a row after which a running child counts as hung. */
  probeFailures: number;
  /** Starts in a row in which the child never became healthy, after which `run` gives up (exit 3); 0: never. */
  maxRestarts: number;
  childLogs: ChildLogs;
  /** Debounce of manifest file events. */
  watchDebounceMs: number;
  /** systemd's NOTIFY_SOCKET (Type=notify units). */
  notifySocket: string | undefined;
}

export function daemonSettings(flags: Flags, env: NodeJS.ProcessEnv): DaemonSettings {
  const restart = flags.restart ?? env.MODELSYNC_RESTART ?? 'on-failure';
  if (restart !== 'always' && restart !== 'on-failure' && restart !== 'never') {
    throw new ModelsyncError('E_USAGE', `--restart must be always, on-failure or never, got "${restart}"`);
  }
  const comfyUrl = flags['comfy-url'] ?? env.MODELSYNC_COMFY_URL;
  if (comfyUrl !== undefined && !/^https?:\/\/[^/]+/.test(comfyUrl)) throw new ModelsyncError('E_USAGE', `--comfy-url must be an http(s) URL, got "${comfyUrl}"`);
  const stop = flags['stop-timeout'] ?? env.MODELSYNC_STOP_TIMEOUT;
  const childLogs = flags['child-logs'] ?? env.MODELSYNC_CHILD_LOGS ?? 'passthrough';
  if (childLogs !== 'passthrough' && childLogs !== 'json') throw new ModelsyncError('E_USAGE', `--child-logs must be passthrough or json, got "${childLogs}"`);
  return {
    comfyUrl: comfyUrl?.replace(/\/+$/, ''),
    startupTimeoutMs: secondsSetting('--startup-timeout', flags['startup-timeout'] ?? env.MODELSYNC_STARTUP_TIMEOUT, 600_000),
    stopTimeoutMs: secondsSetting('--stop-timeout', stop, 10_000),
    restart,
    restartBaseMs: intSetting('MODELSYNC_RESTART_BASE_MS', env.MODELSYNC_RESTART_BASE_MS, 1000, 0),
    restartMaxMs: intSetting('MODELSYNC_RESTART_MAX_MS', env.MODELSYNC_RESTART_MAX_MS, 60_000, 0),
    stableMs: intSetting('MODELSYNC_RESTART_STABLE_MS', env.MODELSYNC_RESTART_STABLE_MS, 60_000, 0),
    degradedAfter: intSetting('MODELSYNC_DEGRADED_AFTER', env.MODELSYNC_DEGRADED_AFTER, 5, 1),
    probeIntervalMs: flagSecondsOrEnvMs('--probe-interval', flags['probe-interval'], 'MODELSYNC_PROBE_INTERVAL_MS', env.MODELSYNC_PROBE_INTERVAL_MS, 5000),
    probeTimeoutMs: flagSecondsOrEnvMs('--probe-timeout', flags['probe-timeout'], 'MODELSYNC_PROBE_TIMEOUT_MS', env.MODELSYNC_PROBE_TIMEOUT_MS, 5000),
    probeFailures: flags['probe-misses'] !== undefined ? intSetting('--probe-misses', flags['probe-misses'], 3, 1) : intSetting('MODELSYNC_PROBE_FAILURES', env.MODELSYNC_PROBE_FAILURES, 3, 1),
    maxRestarts: flags['max-restarts'] !== undefined ? intSetting('--max-restarts', flags['max-restarts'], 10, 0) : intSetting('MODELSYNC_MAX_RESTARTS', env.MODELSYNC_MAX_RESTARTS, 10, 0),
    childLogs,
    watchDebounceMs: intSetting('MODELSYNC_WATCH_DEBOUNCE_MS', env.MODELSYNC_WATCH_DEBOUNCE_MS, 300, 0),
    notifySocket: env.NOTIFY_SOCKET === '' ? undefined : env.NOTIFY_SOCKET,
  };
}

/** A duration given as a flag in seconds or as an environment variable in milliseconds; at least 10 ms. */
function flagSecondsOrEnvMs(flag: string, flagRaw: string | undefined, envName: string, envRaw: string | undefined, dfltMs: number): number {
  const ms = flagRaw !== undefined ? secondsSetting(flag, flagRaw, dfltMs) : intSetting(envName, envRaw, dfltMs, 10);
  if (ms < 10) throw new ModelsyncError('E_USAGE', `${flag} must be at least 0.01 s, got "${flagRaw ?? ''}"`);
  return ms;
}

export interface GateSettings {
  /** `--gate HOST:PORT`: where the gate in front of ComfyUI listens. */
  readonly host: string;
  readonly port: number;
  /** `--gate-frontend-downloads`: serve ComfyUI frontend's server-side download API (experimental). */
  readonly frontendDownloads: boolean;
  /** Largest POST /prompt body the gate reads to find models (ComfyUI's own default limit is 100 MB). */
  readonly maxPromptBytes: number;
  /** Most distinct models one prompt may ask for. */
  readonly maxModels: number;
  /** Longest a relayed prompt keeps its models pinned when its end is never seen. */
  readonly pinMaxMs: number;
  /** How often ComfyUI's queue is read while prompts hold pins (the websocket usually says sooner). */
  readonly queuePollMs: number;
}

const MiB = 1024 * 1024;

/** undefined: no --gate, no gate. */
export function gateSettings(flags: Flags, env: NodeJS.ProcessEnv): GateSettings | undefined {
  const raw = flags.gate ?? env.MODELSYNC_GATE;
  const frontendDownloads = (flags['gate-frontend-downloads'] ?? false) || truthy(env.MODELSYNC_GATE_FRONTEND_DOWNLOADS);
  if (raw === undefined || raw === '') {
    if (frontendDownloads) throw new ModelsyncError('E_USAGE', '--gate-frontend-downloads needs --gate HOST:PORT');
    return undefined;
  }
  return {
    ...parseHostPort(raw, '--gate'),
    frontendDownloads,
    maxPromptBytes: sizeSetting('MODELSYNC_GATE_MAX_PROMPT_BYTES', env.MODELSYNC_GATE_MAX_PROMPT_BYTES, 32 * MiB),
    maxModels: intSetting('MODELSYNC_GATE_MAX_MODELS', env.MODELSYNC_GATE_MAX_MODELS, 64, 1),
    pinMaxMs: secondsSetting('MODELSYNC_GATE_PIN_MAX', env.MODELSYNC_GATE_PIN_MAX, 6 * 3600 * 1000),
    queuePollMs: intSetting('MODELSYNC_GATE_POLL_MS', env.MODELSYNC_GATE_POLL_MS, 5000, 10),
  };
}
