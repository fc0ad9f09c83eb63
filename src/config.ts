import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { isatty } from 'node:tty';
import type { Flags } from './cli-options.js';
import { checkRoots } from './config-roots.js';
import { daemonSettings, gateSettings, gcSettings, type DaemonSettings, type GateSettings, type GcSettings } from './config-sections.js';
import { bytesSetting, intSetting, logLevelSetting, parseHostPort, ratioSetting, secondsSetting, sizeSetting, tokenSetting, truthy } from './config-values.js';
import { ModelsyncError, errnoCode } from './errors.js';
import { connectionsThatFit } from './os-limits.js';
import { readProxySettings, type ProxySettings } from './proxy/proxy-settings.js';

export type { ChildLogs, DaemonSettings, GateSettings, GcSettings, RestartPolicy } from './config-sections.js';

export interface Tunables {
  /** Connections open at once across all files and hosts (the global budget, a hard cap). */
  connections: number;
  /** --host-connections: the most connections one host's adaptive count grows to (within `connections`). */
  hostConnections: number;
  /** What --connections asked for; more than `connections` when the open-file limit cut it. */
  connectionsWanted: number;
  /** --chunk-size: the largest chunk (one ranged request) a file is cut into; see chunkSizeFor. */
  maxChunkSize: number;
  /** Abort a response that sends nothing for this long. */
  idleTimeoutMs: number;
  /** First retry delay; doubles each attempt, with jitter. */
  retryBaseMs: number;
  /** Longest single wait, also the cap for a server's Retry-After. */
  retryMaxWaitMs: number;
  /** Attempts without progress before an entry fails. */
  retryAttempts: number;
  /** Bytes an entry may fetch in one sync, as a multiple of its size (every retry and re-download counted). */
  fetchRatio: number;
  /** Bytes per second every response must bring over each window (0: no minimum). */
  minRate: number;
  minRateWindowMs: number;
  /** The largest download that no metadata gave a size (the server's own say included). */
  maxUnsized: number;
  /** A lease whose content has not changed for this long (on the observer's clock) is stale. */
  leaseStaleMs: number;
  leaseHeartbeatMs: number;
  /** Wait this long for another process's lock on the state DB before failing. */
  stateBusyTimeoutMs: number;
}

export interface Config {
  readonly manifestPath: string | undefined;
  readonly modelsDir: string;
  /** False when it does not exist yet: sync and run create it (prepareModelsDir), the rest refuse. */
  readonly modelsDirExists: boolean;
  readonly storeDir: string;
  readonly stateDir: string;
  readonly json: boolean;
  readonly logLevel: string;
  /** JSON lines, or pino-pretty's text (the default on a terminal). */
  readonly logFormat: LogFormat;
  /** Colours in human-readable output: on a terminal, unless NO_COLOR is set. */
  readonly color: boolean;
  readonly refresh: boolean;
  /** --keep-removed / MODELSYNC_KEEP_REMOVED: what the manifest no longer names stays published. */
  readonly keepRemoved: boolean;
  readonly tunables: Readonly<Tunables>;
  readonly hf: { readonly endpoint: string; readonly token: string | undefined; readonly offline: boolean };
  /** CIVITAI_ENDPOINT (default https://civitai.com) and CIVITAI_TOKEN, sent to that host only. */
  readonly civitai: { readonly endpoint: string; readonly token: string | undefined };
  /** Bearer tokens for https:// sources, by exact host name. */
  readonly httpTokens: ReadonlyMap<string, string>;
  /** HTTPS_PROXY / HTTP_PROXY / NO_PROXY, for every request to a source. */
  readonly proxies: ProxySettings;
  readonly s3: { readonly endpoint: string | undefined; readonly region: string | undefined; readonly forcePathStyle: boolean; readonly profile?: string | undefined };
  /** `token`: MODELSYNC_CONTROL_TOKEN, required by the daemon beyond loopback and sent by its clients. */
  readonly control: { readonly host: string; readonly port: number; readonly token: string | undefined };
  /** `modelsync run`: supervision of the child and the daemon's own timings. */
  readonly daemon: Readonly<DaemonSettings>;
  /** `modelsync run --gate`: the front door in front of ComfyUI; undefined without --gate. */
  readonly gate: GateSettings | undefined;
  /** `modelsync gc`: how long things must have been unused before they are removed. */
  readonly gc: Readonly<GcSettings>;
  /** Every secret value we know of: scrubbed from child output, never logged. */
  readonly secrets: readonly string[];
  /** The environment for children: ours minus every secret variable, plus chosen pass-throughs. */
  readonly childEnv: Readonly<Record<string, string>>;
  /** Is stdout/stderr a terminal (progress bar) */
  readonly tty: boolean;
}

export type LogFormat = 'json' | 'pretty';

const MiB = 1024 * 1024;

/** Variables that hold credentials: never handed to a child unless passed through by name. */
const SECRET_VARS = [
  'HF_TOKEN',
  'HUGGING_FACE_HUB_TOKEN',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_CONTAINER_AUTHORIZATION_TOKEN',
  'CIVITAI_TOKEN',
  'MODELSYNC_HTTP_TOKENS',
];

function isSecretVar(name: string, extra: readonly string[]): boolean {
  return SECRET_VARS.includes(name) || extra.includes(name) || /^MODELSYNC_.*TOKEN/.test(name);
}

function readHfToken(env: NodeJS.ProcessEnv, home: string): string | undefined {
  const fromEnv = env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN;
  if (fromEnv) return fromEnv.trim();
  const hfHome = env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(home, '.cache'), 'huggingface');
  const file = env.HF_TOKEN_PATH ?? path.join(hfHome, 'token');
  try {
    const t = readFileSync(file, 'utf8').trim();
    return t === '' ? undefined : t;
  } catch {
    return undefined;
  }
}

/** `MODELSYNC_HTTP_TOKENS="host=token,host2=token2"`, plus `CIVITAI_TOKEN` for civitai.com. */
function readHttpTokens(env: NodeJS.ProcessEnv): Map<string, string> {
  const out = new Map<string, string>();
  for (const pair of (env.MODELSYNC_HTTP_TOKENS ?? '').split(',')) {
    const i = pair.indexOf('=');
    if (i <= 0) continue;
    out.set(pair.slice(0, i).trim().toLowerCase(), pair.slice(i + 1).trim());
  }
  if (env.CIVITAI_TOKEN) out.set('civitai.com', env.CIVITAI_TOKEN);
  return out;
}

/** CIVITAI_ENDPOINT: an http(s) origin (a mirror, a stand-in), like HF_ENDPOINT. */
function civitaiEndpoint(raw: string | undefined): string {
  if (raw === undefined || raw.trim() === '') return 'https://civitai.com';
  const v = raw.trim().replace(/\/+$/, '');
  let u: URL | undefined;
  try {
    u = new URL(v);
  } catch {
    u = undefined;
  }
  if (u === undefined || (u.protocol !== 'https:' && u.protocol !== 'http:') || u.username !== '' || u.password !== '' || u.search !== '') {
    throw new ModelsyncError('E_USAGE', 'CIVITAI_ENDPOINT must be an http(s) URL without credentials or query, e.g. https://civitai.com');
  }
  return v;
}

/** Seconds, more than none and at most a day (a window is how long a trickle may go on). */
function rateWindow(raw: string | undefined): number {
  const ms = secondsSetting('MODELSYNC_MIN_RATE_WINDOW', raw, 60_000);
  if (ms < 1 || ms > 86_400_000) throw new ModelsyncError('E_USAGE', `MODELSYNC_MIN_RATE_WINDOW must be more than 0 and at most 86400 seconds, got "${raw ?? ''}"`);
  return ms;
}

function defaultStateDir(env: NodeJS.ProcessEnv, home: string): string {
  if (env.XDG_STATE_HOME) return path.join(env.XDG_STATE_HOME, 'modelsync');
  if (process.getuid?.() === 0) return '/var/lib/modelsync';
  return path.join(home, '.local', 'state', 'modelsync');
}

/** `secretVars`: variables secret by their value (a proxy URL with a password in it). */
function childEnvFrom(env: NodeJS.ProcessEnv, secretVars: readonly string[]): Record<string, string> {
  const pass = new Set((env.MODELSYNC_CHILD_ENV_PASSTHROUGH ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (isSecretVar(k, secretVars) && !pass.has(k)) continue;
    out[k] = v;
  }
  return out;
}

function logFormatSetting(raw: string | undefined, isTty: boolean): LogFormat {
  const v = (raw ?? 'auto').trim().toLowerCase();
  if (v === 'auto' || v === '') return isTty ? 'pretty' : 'json';
  if (v === 'json' || v === 'pretty') return v;
  throw new ModelsyncError('E_USAGE', `--log-format must be auto, json or pretty, got "${raw ?? ''}"`);
}

/** The process environment, handed to `main` by the entry point: this module is its only reader. */
export function processEnvironment(): NodeJS.ProcessEnv {
  return process.env;
}

/** What it takes to reach a running daemon: no models dir, no manifest (resync, status). */
export interface ControlConfig {
  readonly control: Config['control'];
  readonly json: boolean;
}

export function loadControlConfig(flags: Flags, env: NodeJS.ProcessEnv = processEnvironment()): ControlConfig {
  const token = tokenSetting('MODELSYNC_CONTROL_TOKEN', env.MODELSYNC_CONTROL_TOKEN);
  return Object.freeze({ control: Object.freeze({ ...parseHostPort(flags.control ?? env.MODELSYNC_CONTROL ?? '127.0.0.1:8189'), token }), json: flags.json ?? false });
}

/** A directory: true; nothing there: false; anything else (a file, no permission) is refused. */
function directoryExists(dir: string): boolean {
  try {
    if (statSync(dir).isDirectory()) return true;
    throw new ModelsyncError('E_USAGE', `models dir ${dir} is not a directory`);
  } catch (e) {
    if (e instanceof ModelsyncError) throw e;
    if (errnoCode(e) === 'ENOENT') return false;
    throw new ModelsyncError('E_USAGE', `models dir ${dir} cannot be used: ${errnoCode(e) ?? String(e)}`, { cause: e });
  }
}

/**
 * The only module that reads the environment. Flags win over env vars, env vars over defaults;
 * the result is frozen and handed to everything else. (Whether stderr is a terminal is asked of
 * fd 2: process.stderr would build its stream for the question.)
 */
export function loadConfig(flags: Flags, env: NodeJS.ProcessEnv = processEnvironment(), isTty = isatty(2)): Config {
  const home = env.HOME ?? homedir();
  const manifest = flags.manifest ?? env.MODELSYNC_MANIFEST;
  const modelsRaw = flags['models-dir'] ?? env.MODELSYNC_MODELS_DIR;
  if (!modelsRaw) {
    throw new ModelsyncError('E_USAGE', 'no models dir: pass --models-dir DIR or set MODELSYNC_MODELS_DIR (ComfyUI\'s models/ folder)');
  }
  const modelsDir = path.resolve(modelsRaw);
  const modelsDirExists = directoryExists(modelsDir);
  const storeDir = path.resolve(flags['store-dir'] ?? env.MODELSYNC_STORE_DIR ?? path.join(modelsDir, '.modelsync-store'));
  const stateDir = path.resolve(flags['state-dir'] ?? env.MODELSYNC_STATE_DIR ?? defaultStateDir(env, home));
  const hfToken = readHfToken(env, home);
  const httpTokens = readHttpTokens(env);
  const controlToken = tokenSetting('MODELSYNC_CONTROL_TOKEN', env.MODELSYNC_CONTROL_TOKEN);
  const proxies = readProxySettings(env);
  const secrets = [
    ...proxies.secrets,
    hfToken,
    controlToken,
    env.HUGGING_FACE_HUB_TOKEN,
    env.AWS_SECRET_ACCESS_KEY,
    env.AWS_SESSION_TOKEN,
    env.AWS_CONTAINER_AUTHORIZATION_TOKEN,
    ...httpTokens.values(),
  ].filter((s): s is string => typeof s === 'string' && s.length > 0);

  const connectionsWanted = intSetting('--connections', flags.connections ?? env.MODELSYNC_CONNECTIONS, 64, 1);
  const tunables: Tunables = {
    // Never more than the open-file limit can hold (os-limits.ts); openContext says when it cut.
    connections: Math.min(connectionsWanted, connectionsThatFit()),
    connectionsWanted,
    hostConnections: intSetting('--host-connections', flags['host-connections'] ?? env.MODELSYNC_HOST_CONNECTIONS, 64, 1),
    maxChunkSize: sizeSetting('--chunk-size', flags['chunk-size'] ?? env.MODELSYNC_CHUNK_SIZE, 32 * MiB),
    idleTimeoutMs: intSetting('MODELSYNC_IDLE_TIMEOUT_MS', env.MODELSYNC_IDLE_TIMEOUT_MS, 30_000, 10),
    retryBaseMs: intSetting('MODELSYNC_RETRY_BASE_MS', env.MODELSYNC_RETRY_BASE_MS, 500, 0),
    retryMaxWaitMs: intSetting('MODELSYNC_RETRY_MAX_WAIT_MS', env.MODELSYNC_RETRY_MAX_WAIT_MS, 120_000, 0),
    retryAttempts: intSetting('MODELSYNC_RETRY_ATTEMPTS', env.MODELSYNC_RETRY_ATTEMPTS, 6, 1),
    fetchRatio: ratioSetting('MODELSYNC_FETCH_BUDGET', env.MODELSYNC_FETCH_BUDGET, 3, 1),
    minRate: bytesSetting('--min-rate', flags['min-rate'] ?? env.MODELSYNC_MIN_RATE, 4 * 1024),
    minRateWindowMs: rateWindow(env.MODELSYNC_MIN_RATE_WINDOW),
    maxUnsized: bytesSetting('MODELSYNC_MAX_UNSIZED', env.MODELSYNC_MAX_UNSIZED, 16 * 1024 * MiB),
    leaseStaleMs: intSetting('MODELSYNC_LEASE_STALE_MS', env.MODELSYNC_LEASE_STALE_MS, 60_000, 50),
    leaseHeartbeatMs: 0,
    stateBusyTimeoutMs: intSetting('MODELSYNC_STATE_BUSY_TIMEOUT_MS', env.MODELSYNC_STATE_BUSY_TIMEOUT_MS, 5000, 0),
  };
  tunables.leaseHeartbeatMs = Math.max(20, Math.floor(tunables.leaseStaleMs / 6));

  const config: Config = {
    manifestPath: manifest === undefined ? undefined : path.resolve(manifest),
    modelsDir,
    modelsDirExists,
    storeDir,
    stateDir,
    json: flags.json ?? false,
    logLevel: flags['log-level'] !== undefined ? logLevelSetting('--log-level', flags['log-level'], 'info') : logLevelSetting('MODELSYNC_LOG_LEVEL', env.MODELSYNC_LOG_LEVEL, 'info'),
    logFormat: logFormatSetting(flags['log-format'] ?? env.MODELSYNC_LOG_FORMAT, isTty),
    // https://no-color.org: set and not empty.
    color: isTty && (env.NO_COLOR ?? '') === '',
    refresh: flags.refresh ?? false,
    keepRemoved: (flags['keep-removed'] ?? false) || truthy(env.MODELSYNC_KEEP_REMOVED),
    tunables: Object.freeze(tunables),
    hf: Object.freeze({
      endpoint: (env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
      token: hfToken,
      offline: (flags.offline ?? false) || truthy(env.HF_HUB_OFFLINE),
    }),
    civitai: Object.freeze({ endpoint: civitaiEndpoint(env.CIVITAI_ENDPOINT), token: env.CIVITAI_TOKEN?.trim() || undefined }),
    httpTokens,
    proxies: proxies.settings,
    s3: Object.freeze({
      endpoint: flags['s3-endpoint'] ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL,
      region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION,
      forcePathStyle: (flags['s3-path-style'] ?? false) || truthy(env.MODELSYNC_S3_PATH_STYLE),
      // Only named in messages (which credential chain was tried); the AWS SDK reads it itself.
      profile: env.AWS_PROFILE,
    }),
    control: Object.freeze({ ...parseHostPort(flags.control ?? env.MODELSYNC_CONTROL ?? '127.0.0.1:8189'), token: controlToken }),
    daemon: Object.freeze(daemonSettings(flags, env)),
    gate: freezeOptional(gateSettings(flags, env)),
    gc: Object.freeze(gcSettings(flags, env)),
    secrets: Object.freeze(secrets),
    childEnv: Object.freeze(childEnvFrom(env, proxies.secretVars)),
    tty: isTty,
  };
  // Last: every flag and variable is known good before the dirs are judged against each other.
  checkRoots(modelsDir, storeDir, stateDir);
  return Object.freeze(config);
}

function freezeOptional<T extends object>(v: T | undefined): Readonly<T> | undefined {
  return v === undefined ? undefined : Object.freeze(v);
}
