import { setMaxListeners } from 'node:events';
import { loadConfig, type Config, type Flags } from '../config.js';
import { ModelsyncError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import type { Manifest } from '../manifest/types.js';
import { openContext, type SyncContext } from '../sync/context.js';
import { readManifestAndLock, settleLock } from '../sync/use-lock.js';

/** What every command gets: parsed flags, the environment, and where to write. */
export interface CommandIo {
  readonly flags: Flags & Record<string, string | boolean | undefined>;
  readonly positionals: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
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

/** Config, logger, manifest (validated before anything else is opened) and sync context. */
export async function loadAll(io: CommandIo): Promise<Loaded> {
  const config = loadConfig(io.flags, io.env);
  const log = createLogger(config.logLevel);
  // The lock file beside the manifest, if any, is checked for drift before anything is opened.
  const read = await readManifestAndLock(requireManifestPath(config), io.flags['update-lock'] === true);
  const ctx = await openContext(config, log);
  try {
    const manifest = await settleLock(ctx, read, log);
    return { config, log, manifest, ctx };
  } catch (e) {
    ctx.close();
    throw e;
  }
}

export function print(io: CommandIo, line: string): void {
  io.stdout.write(`${line}\n`);
}

export function printJson(io: CommandIo, value: unknown): void {
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
