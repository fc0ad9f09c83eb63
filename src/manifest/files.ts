import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ModelsyncError, errnoCode } from '../errors.js';

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
  const manifest = await readFile(manifestPath, 'utf8').catch((e: unknown) => {
    throw cannotRead('manifest', manifestPath, e);
  });
  const lock = await readFile(lockPath, 'utf8').catch((e: unknown) => absentOrThrow(lockPath, e));
  return { path: manifestPath, lockPath, manifest, lock };
}

/** readManifestFiles, for the warm start: two small files, where a thread-pool round trip each costs more than the read. */
export function readManifestFilesSync(manifestPath: string): ManifestFiles {
  const lockPath = lockPathFor(manifestPath);
  let manifest: string;
  try {
    manifest = readFileSync(manifestPath, 'utf8');
  } catch (e) {
    throw cannotRead('manifest', manifestPath, e);
  }
  let lock: string | undefined;
  try {
    lock = readFileSync(lockPath, 'utf8');
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

function cannotRead(what: 'manifest' | 'lock file', file: string, e: unknown): ModelsyncError {
  return new ModelsyncError('E_USAGE', `cannot read ${what} ${file}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}
