import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { applyLock, writeLock } from '../manifest/lock.js';
import type { Manifest } from '../manifest/types.js';
import type { LockUpdate } from '../manifest/validate.js';
import type { SyncContext } from './context.js';

/** What `--update-lock` settled on: the manifest to sync, and the lock's new text if it was rewritten. */
export interface SettledLock {
  readonly manifest: Manifest;
  readonly lockText: string | undefined;
}

/**
 * `--update-lock`: the entries that drifted are locked again (those that still agree keep their
 * pins), the lock is rewritten, and the sync runs on its pins.
 */
export async function settleLock(ctx: SyncContext, read: LockUpdate, log: Logger, signal: AbortSignal = new AbortController().signal): Promise<SettledLock> {
  let lock = read.lock;
  let lockText: string | undefined;
  if (read.drift.length > 0) {
    const { pinManifest } = await import('./pin.js');
    log.info({ lockFile: read.lockFile, drift: read.drift }, 'updating the lock file');
    const result = await pinManifest(ctx, read.manifest, { previous: read.lock, refresh: false, signal });
    const failed = result.outcomes.filter((o) => o.error !== undefined);
    if (result.lock === undefined || failed.length > 0) {
      const lines = failed.map((o) => `  - ${o.error?.message ?? 'not locked'}`);
      throw new ModelsyncError('E_SYNC_FAILED', [`could not update the lock file ${read.lockFile}:`, ...lines].join('\n'), { cause: failed[0]?.error });
    }
    for (const o of result.outcomes) {
      if (!o.kept && o.pin?.sha256From === 'download') log.warn({ dest: o.entry.dest, sha256: o.pin.sha256 }, 'sha256 computed by downloading the file once; recorded in the lock');
    }
    lock = result.lock;
    lockText = await writeLock(read.lockFile, lock);
  }
  return { manifest: lock === undefined ? read.manifest : applyLock(read.manifest, lock), lockText };
}
