import { loadConfig } from '../config.js';
import { ModelsyncError } from '../errors.js';
import { createLogger } from '../log.js';
// Types only from common.js: its imports load the YAML parser and zod, which a warm start skips.
import type { CommandIo } from './common.js';

/**
 * `modelsync run [-- CMD ARGS...]`: the daemon. Everything after the flags is the child's argv,
 * passed as an array. Kept lean: a warm start should reach the spawn in a few stat calls.
 */
export async function runCommand(io: CommandIo): Promise<number> {
  const config = loadConfig(io.flags, io.env);
  if (config.manifestPath === undefined) throw new ModelsyncError('E_USAGE', 'no manifest: pass --manifest FILE or set MODELSYNC_MANIFEST');
  const log = createLogger(config.logLevel, { format: config.logFormat, color: config.color });
  const { startDaemon } = await import('../daemon/daemon.js');
  const daemon = await startDaemon({
    config,
    log,
    manifestPath: config.manifestPath,
    updateLock: io.flags['update-lock'] === true,
    command: io.positionals,
    stdout: io.stdout,
    stderr: io.stderr,
  });
  return daemon.done;
}
