import { setMaxListeners } from 'node:events';
import type { Flags } from '../cli-options.js';
import { loadConfig, type Config } from '../config.js';
import type { ManifestLookup } from '../manifest/cache.js';
import { ModelsyncError } from '../errors.js';
import { prepareModelsDir } from '../models-dir.js';
import type { Logger } from '../log.js';
import type { Manifest } from '../manifest/types.js';
import type { SyncContext } from '../sync/context.js';

/** What every command gets: parsed flags, the environment, and where to write. */
export interface CommandIo {
  readonly flags: Flags;
  readonly positionals: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  /** Set when the bin's entry already tried this `sync` warm and had to leave it to the full path. */
  readonly warm?: WarmAttempt | undefined;
}

/** What a warm attempt that did not finish hands on. */
export interface WarmAttempt {
  /** Its open of the state DB replaced an unreadable one, for this reason. */
  readonly dbRecreated?: string | undefined;
  /** The state DB was locked for the whole busy timeout: reported as is, not waited for twice. */
  readonly stateLocked?: string | undefined;
}

export interface Loaded {
  readonly config: Config;
  readonly log: Logger;
  readonly manifest: Manifest;
  readonly ctx: SyncContext;
}

export function requireManifestPath(config: Config): string {
  if (config.manifestPath === undefined) {
    throw new ModelsyncError('E_USAGE', 'no manifest: pass --manifest FILE or set MODELSYNC_MANIFEST');
  }
  return config.manifestPath;
}

/** What a command may already hold when it gets to loadAll (a warm start that fell through). */
export interface Preloaded {
  readonly config?: Config;
  readonly lookup?: ManifestLookup | undefined;
  readonly dbRecreated?: string | undefined;
  /** A models dir that does not exist yet is created (sync), not refused (see prepareModelsDir). */
  readonly createModelsDir?: boolean;
}

/**
 * Config, logger, manifest (validated before anything else is opened: sync/open-with-manifest.ts)
 * and sync context. Everything heavier than the config loads here, on demand: a warm start
 * needs none of it.
 */
export async function loadAll(io: CommandIo, pre: Preloaded = {}): Promise<Loaded> {
  const config = pre.config ?? loadConfig(io.flags, io.env);
  const manifestPath = requireManifestPath(config);
  const [{ createLogger }, { openWithManifest }] = await Promise.all([import('../log.js'), import('../sync/open-with-manifest.js')]);
  const log = createLogger(config.logLevel, { format: config.logFormat, color: config.color });
  const { manifest, ctx } = await openWithManifest(config, log, manifestPath, {
    updateLock: io.flags['update-lock'] === true,
    lookup: pre.lookup,
    dbRecreated: pre.dbRecreated,
    beforeOpen: () => prepareModelsDir(config, (what) => io.stderr.write(`modelsync: ${what}\n`), pre.createModelsDir === true),
  });
  return { config, log, manifest, ctx };
}

/** Where print and printJson write: a command's stdout, or anything that takes text. */
export interface Out {
  readonly stdout: { write(text: string): unknown };
}

export function print(io: Out, line: string): void {
  io.stdout.write(`${line}\n`);
}

export function printJson(io: Out, value: unknown): void {
  io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** SIGINT/SIGTERM abort the sync cleanly: partials and journals stay resumable. */
export function abortOnSignals(): { signal: AbortSignal; dispose(): void } {
  const ctrl = new AbortController();
  // One listener per file in flight.
  setMaxListeners(0, ctrl.signal);
  const on = (sig: NodeJS.Signals): void => {
    ctrl.abort(new ModelsyncError('E_ABORTED', `interrupted by ${sig}`));
  };
  process.once('SIGINT', on);
  process.once('SIGTERM', on);
  return {
    signal: ctrl.signal,
    dispose() {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
    },
  };
}
