import path from 'node:path';
import { ModelsyncError, errnoCode } from '../errors.js';
import { readBounded, readBoundedSync } from '../read-bounded.js';

/**
 * The most a manifest or lock file may hold. Ten thousand entries are about 3 MB; a file far
 * past that is a mistake or an attack (a YAML parser needs many times the text's size in
 * memory), and `--manifest /dev/zero` must not read forever: reads stop at this size.
 */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

/**
 * A manifest's text and its lock file's, read together: validation, the cache key and a
 * reload's "did anything change" all work from exactly these strings, so what was validated is
 * what was read. This module loads neither the YAML parser nor zod: a warm start reads here.
 */
export interface ManifestFiles {
  readonly path: string;
  /** `lockPathFor(path)`. */
  readonly lockPath: string;
  readonly manifest: string;
  /** undefined: there is no lock file (an empty one is a lock that is not usable). */
  readonly lock: string | undefined;
}

/** `models.yaml` -> `models.lock.json`, in the same folder: the lock file's one naming rule. */
export function lockPathFor(manifestPath: string): string {
  const base = path.basename(manifestPath).replace(/\.(ya?ml|json)$/i, '');
  return path.join(path.dirname(manifestPath), `${base}.lock.json`);
}

export async function readManifestFiles(manifestPath: string): Promise<ManifestFiles> {
  const lockPath = lockPathFor(manifestPath);
  const manifest = await readBounded(manifestPath, MAX_MANIFEST_BYTES, () => tooBig('manifest', manifestPath)).catch((e: unknown) => {
    throw cannotRead('manifest', manifestPath, e);
  });
  const lock = await readBounded(lockPath, MAX_MANIFEST_BYTES, () => tooBig('lock file', lockPath)).catch((e: unknown) => absentOrThrow(lockPath, e));
  return { path: manifestPath, lockPath, manifest, lock };
}

/** readManifestFiles, for the warm start: two small files, where a thread-pool round trip each costs more than the read. */
export function readManifestFilesSync(manifestPath: string): ManifestFiles {
  const lockPath = lockPathFor(manifestPath);
  let manifest: string;
  try {
    manifest = readBoundedSync(manifestPath, MAX_MANIFEST_BYTES, () => tooBig('manifest', manifestPath));
  } catch (e) {
    throw cannotRead('manifest', manifestPath, e);
  }
  let lock: string | undefined;
  try {
    lock = readBoundedSync(lockPath, MAX_MANIFEST_BYTES, () => tooBig('lock file', lockPath));
  } catch (e) {
    lock = absentOrThrow(lockPath, e);
  }
  return { path: manifestPath, lockPath, manifest, lock };
}

export function sameManifestFiles(a: ManifestFiles, b: ManifestFiles): boolean {
  return a.path === b.path && a.manifest === b.manifest && a.lock === b.lock;
}

function absentOrThrow(lockPath: string, e: unknown): undefined {
  if (errnoCode(e) === 'ENOENT') return undefined;
  throw cannotRead('lock file', lockPath, e);
}

type What = 'manifest' | 'lock file';

function tooBig(what: What, file: string): ModelsyncError {
  return new ModelsyncError('E_MANIFEST', `${what} ${file} is larger than ${MAX_MANIFEST_BYTES / 1024 / 1024} MiB; refusing to parse it (is it the right file?)`);
}

function cannotRead(what: What, file: string, e: unknown): ModelsyncError {
  if (e instanceof ModelsyncError) return e;
  return new ModelsyncError('E_USAGE', `cannot read ${what} ${file}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}
