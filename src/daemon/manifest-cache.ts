import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Manifest } from '../manifest/types.js';
import type { ManifestFiles } from './manifest-holder.js';

/**
 * The last manifest this state dir validated, keyed by its exact text, its lock's text and the
 * validating code. Validation loads the YAML parser and zod (about 100 ms), most of a warm
 * start's budget; the result is a pure function of that key, so a hit is as good as a parse.
 */
const CACHE_FILE = 'manifest-cache.json';
const FORMAT = 'modelsync-manifest-cache-1';

let fingerprint: string | undefined;

/** Names, sizes and mtimes of the modules that validate a manifest: a rebuild changes the key. */
function codeFingerprint(): string {
  if (fingerprint !== undefined) return fingerprint;
  const here = path.dirname(fileURLToPath(import.meta.url));
  const parts: string[] = [];
  const manifestDir = path.join(here, '..', 'manifest');
  const files = [...readdirSync(manifestDir).sort().map((n) => path.join(manifestDir, n)), path.join(here, '..', 'sync', 'use-lock.js')];
  for (const f of files) {
    const st = statSync(f, { throwIfNoEntry: false });
    parts.push(`${path.basename(f)}:${st?.size ?? '-'}:${st?.mtimeMs ?? '-'}`);
  }
  fingerprint = parts.join('|');
  return fingerprint;
}

export function manifestCacheKey(manifestPath: string, files: ManifestFiles): string {
  return createHash('sha256').update(`${FORMAT}\0${codeFingerprint()}\0${manifestPath}\0${files.manifest}\0${files.lock}`).digest('hex');
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
  const file = path.join(stateDir, CACHE_FILE);
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify({ key, manifest }));
    await rename(tmp, file);
  } catch {
    await rm(tmp, { force: true });
  }
}
