import { readdirSync, readFileSync, statSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelsyncError, errnoCode } from '../errors.js';
import type { Manifest } from '../manifest/types.js';
import { lockFileOf, readManifestFiles, type ManifestFiles } from './manifest-holder.js';

/**
 * The last manifest this state dir validated, keyed by its exact text, its lock's text and the
 * validating code. Validation loads the YAML parser and zod (about 100 ms), most of a warm
 * start's budget; the result is a pure function of that key, so a hit is as good as a parse.
 * The key is kept whole, not hashed: comparing a few kilobytes costs nothing, and loading
 * node:crypto would cost a warm start more than the check itself. So the manifest's text lands
 * in the state dir, and a manifest that holds a credential (a presigned URL's query) is never
 * cached: it is parsed every time.
 */
const CACHE_FILE = 'manifest-cache.json';
const FORMAT = 'modelsync-manifest-cache-2';

let fingerprint: string | undefined;

/**
 * Where the compiled modules live: this one sits in daemon/, except in the bin's bundle
 * (dist/modelsync.cjs, see warm-start.ts), which sits beside cli.js.
 */
function codeRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.basename(here) === 'daemon' ? path.dirname(here) : here;
}

/** Names, sizes and mtimes of the modules that validate a manifest: a rebuild changes the key. */
function codeFingerprint(): string {
  if (fingerprint !== undefined) return fingerprint;
  const root = codeRoot();
  const manifestDir = path.join(root, 'manifest');
  let names: string[] = [];
  try {
    names = readdirSync(manifestDir).sort();
  } catch {
    /* no such folder: the key still holds the manifest's text, and the names below */
  }
  const parts = [manifestDir];
  for (const f of [...names.map((n) => path.join(manifestDir, n)), path.join(root, 'sync', 'use-lock.js')]) {
    const st = statSync(f, { throwIfNoEntry: false });
    parts.push(`${path.basename(f)}:${st?.size ?? '-'}:${st?.mtimeMs ?? '-'}`);
  }
  fingerprint = parts.join('|');
  return fingerprint;
}

export function manifestCacheKey(manifestPath: string, files: ManifestFiles): string {
  return [FORMAT, codeFingerprint(), manifestPath, files.manifest, files.lock].join('\0');
}

export async function readCachedManifest(stateDir: string, key: string): Promise<Manifest | undefined> {
  try {
    const data = JSON.parse(await readFile(path.join(stateDir, CACHE_FILE), 'utf8')) as { key?: unknown; manifest?: Manifest };
    return data.key === key && data.manifest !== undefined ? data.manifest : undefined;
  } catch {
    return undefined;
  }
}

/** Best effort: a cache that cannot be written costs the next start a parse, nothing else. */
export async function writeCachedManifest(stateDir: string, key: string, manifest: Manifest): Promise<void> {
  if (holdsCredentials(manifest)) return;
  const file = path.join(stateDir, CACHE_FILE);
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify({ key, manifest }));
    await rename(tmp, file);
  } catch {
    await rm(tmp, { force: true });
  }
}

/** A presigned URL carries its credential in the query; nothing else in a manifest is secret. */
function holdsCredentials(manifest: Manifest): boolean {
  return manifest.entries.some((e) => e.source.kind === 'https' && new URL(e.source.url).search !== '');
}

/** A manifest's files as read now, their cache key, and the manifest validated from exactly them, if cached. */
export interface ManifestLookup {
  readonly path: string;
  readonly files: ManifestFiles;
  readonly key: string;
  readonly cached: Manifest | undefined;
}

/**
 * Synchronous reads: three small files, where a thread-pool round trip each would cost a warm
 * start more than the reading.
 */
export function lookUpManifest(stateDir: string, manifestPath: string): ManifestLookup {
  const files = readManifestFilesSync(manifestPath);
  const key = manifestCacheKey(manifestPath, files);
  let cached: Manifest | undefined;
  try {
    const data = JSON.parse(readFileSync(path.join(stateDir, CACHE_FILE), 'utf8')) as { key?: unknown; manifest?: Manifest };
    if (data.key === key) cached = data.manifest;
  } catch {
    /* no cache, or not ours: a miss */
  }
  return { path: manifestPath, files, key, cached };
}

/** readManifestFiles (manifest-holder.ts), synchronously, with the same errors. */
function readManifestFilesSync(file: string): ManifestFiles {
  let manifest: string;
  try {
    manifest = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelsyncError('E_USAGE', `cannot read manifest ${file}: ${(e as Error).message}`, { cause: e });
  }
  let lock = '';
  try {
    lock = readFileSync(lockFileOf(file), 'utf8');
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw new ModelsyncError('E_USAGE', `cannot read lock file ${lockFileOf(file)}: ${(e as Error).message}`, { cause: e });
  }
  return { manifest, lock };
}

/**
 * Cache what was validated from `lookup.files`, unless the files changed since they were read:
 * the validation may have read them again, and a mix of two versions must not be cached.
 */
export async function rememberManifest(stateDir: string, lookup: ManifestLookup, manifest: Manifest): Promise<void> {
  const now = await readManifestFiles(lookup.path).catch(() => undefined);
  if (now?.manifest === lookup.files.manifest && now.lock === lookup.files.lock) await writeCachedManifest(stateDir, lookup.key, manifest);
}
