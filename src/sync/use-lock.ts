import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { loadManifestFile, parseManifest } from '../manifest/load.js';
import { applyLock, driftError, lockDrift, lockPathFor, readLock, writeLock, type LockFile } from '../manifest/lock.js';
import type { Manifest } from '../manifest/types.js';
import type { SyncContext } from './context.js';

/** A manifest as read, with the lock file beside it (if any) and how the two disagree. */
export interface ManifestAndLock {
  /** As written: https:// and s3:// entries may lack a sha256 when a lock supplies it. */
  readonly manifest: Manifest;
  readonly lockFile: string;
  readonly lock: LockFile | undefined;
  readonly drift: readonly string[];
  readonly updateLock: boolean;
}

/**
 * Read a manifest and its lock, before anything else is opened. Without a lock the manifest is
 * validated as always; with one, drift stops here (exit 2) unless `--update-lock` was given.
 */
export async function readManifestAndLock(manifestPath: string, updateLock: boolean): Promise<ManifestAndLock> {
  const lockFile = lockPathFor(manifestPath);
  let lock: LockFile | undefined;
  let unusable: ModelsyncError | undefined;
  try {
    lock = await readLock(lockFile);
  } catch (e) {
    if (!(e instanceof ModelsyncError) || e.code !== 'E_LOCK_DRIFT' || !updateLock) throw e;
    unusable = e;
  }
  const lenient = lock !== undefined || updateLock;
  const manifest = await loadManifestFile(manifestPath, { requireHashes: !lenient });
  if (!lenient) return { manifest, lockFile, lock, drift: [], updateLock };
  const drift = lock === undefined ? [unusable === undefined ? `there is no lock file ${lockFile} yet` : unusable.message] : lockDrift(manifest, lock);
  if (drift.length > 0 && !updateLock) throw driftError(manifest, lockFile, drift);
  return { manifest, lockFile, lock, drift, updateLock };
}

/**
 * The manifest a sync runs on: the lock's pins applied. With `--update-lock` and drift, the
 * entries that drifted are locked again (those that still agree keep their pins) and the lock
 * is rewritten first.
 */
export async function settleLock(ctx: SyncContext, read: ManifestAndLock, log: Logger, signal: AbortSignal = new AbortController().signal): Promise<Manifest> {
  if (read.lock === undefined && !read.updateLock) return read.manifest;
  let lock = read.lock;
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
    await writeLock(read.lockFile, lock);
  }
  if (lock === undefined) return read.manifest;
  return applyLock(read.manifest, lock);
}

/**
 * For callers that hold the manifest's text (the daemon's reloads): parsed, checked against its
 * lock for drift (E_LOCK_DRIFT), the lock applied. The same rules as every command, no network.
 */
export async function parseWithLock(text: string, manifestPath: string): Promise<Manifest> {
  const lockFile = lockPathFor(manifestPath);
  const lock = await readLock(lockFile);
  const manifest = parseManifest(text, manifestPath, { requireHashes: lock === undefined });
  if (lock === undefined) return manifest;
  const drift = lockDrift(manifest, lock);
  if (drift.length > 0) throw driftError(manifest, lockFile, drift);
  return applyLock(manifest, lock);
}
