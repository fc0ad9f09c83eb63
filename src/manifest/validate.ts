import { ModelsyncError } from '../errors.js';
import type { ManifestFiles } from './files.js';
import { parseManifest } from './load.js';
import { applyLock, driftError, lockDrift, parseLock, type LockFile } from './lock.js';
import type { Manifest } from './types.js';

/**
 * The manifest a sync runs on, from exactly the text read: parsed, checked against its lock for
 * drift (E_LOCK_DRIFT, exit 2), the lock's pins applied. Without a lock every https:// and s3://
 * entry needs its sha256; with one, the lock supplies it. No network, no other file read.
 */
export function validateManifest(files: ManifestFiles): Manifest {
  const lock = parseLock(files.lock, files.lockPath);
  const manifest = parseManifest(files.manifest, files.path, { requireHashes: lock === undefined });
  if (lock === undefined) return manifest;
  const drift = lockDrift(manifest, lock);
  if (drift.length > 0) throw driftError(manifest, files.lockPath, drift);
  return applyLock(manifest, lock);
}

/** What `--update-lock` starts from: the manifest as written, the lock if usable, and how the two disagree. */
export interface LockUpdate {
  /** As written: https:// and s3:// entries may lack a sha256, which the new lock will supply. */
  readonly manifest: Manifest;
  readonly lockFile: string;
  readonly lock: LockFile | undefined;
  /** Empty when the lock applies as it is. */
  readonly drift: readonly string[];
}

/** As validateManifest, but drift (a missing or unusable lock included) is returned, not thrown. */
export function readForLockUpdate(files: ManifestFiles): LockUpdate {
  let lock: LockFile | undefined;
  let unusable: ModelsyncError | undefined;
  try {
    lock = parseLock(files.lock, files.lockPath);
  } catch (e) {
    if (!(e instanceof ModelsyncError) || e.code !== 'E_LOCK_DRIFT') throw e;
    unusable = e;
  }
  const manifest = parseManifest(files.manifest, files.path, { requireHashes: false });
  const drift = lock === undefined ? [unusable?.message ?? `there is no lock file ${files.lockPath} yet`] : lockDrift(manifest, lock);
  return { manifest, lockFile: files.lockPath, lock, drift };
}
