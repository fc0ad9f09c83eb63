import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { codeRoot } from '../code-root.js';
import { writeJsonAtomic } from '../fs/atomic-write.js';
import { readManifestFilesSync, type ManifestFiles } from './files.js';
import type { Manifest } from './types.js';

/**
 * The last manifest this state dir validated, keyed by its exact text, its lock's text and the
 * validating code (every module in manifest/). Validation loads the YAML parser and zod (about
 * 100 ms), most of a warm start's budget; the result is a pure function of that key, so a hit is
 * as good as a parse. The key is kept whole, not hashed: comparing a few kilobytes costs
 * nothing, and loading node:crypto would cost a warm start more than the check itself. So the
 * manifest's text lands in the state dir, and a manifest that holds a credential (a presigned
 * URL's query) is never cached: it is parsed every time.
 * This module is on the warm path: it must not load the YAML parser or zod.
 */
const CACHE_FILE = 'manifest-cache.json';
const FORMAT = 'modelsync-manifest-cache-3';

let fingerprint: string | undefined;

/** Names, sizes and mtimes of the modules that validate a manifest: a rebuild changes the key. */
function codeFingerprint(): string {
  if (fingerprint !== undefined) return fingerprint;
  const manifestDir = path.join(codeRoot(), 'manifest');
  let names: string[] = [];
  try {
    names = readdirSync(manifestDir).sort();
  } catch {
    /* no such folder: the key still holds the manifest's text and the folder's name */
  }
  const parts = [manifestDir];
  for (const name of names) {
    const st = statSync(path.join(manifestDir, name), { throwIfNoEntry: false });
    parts.push(`${name}:${st?.size ?? '-'}:${st?.mtimeMs ?? '-'}`);
  }
  fingerprint = parts.join('|');
  return fingerprint;
}

function manifestCacheKey(files: ManifestFiles): string {
  // JSON keeps "no lock file" (null) apart from an empty one.
  return JSON.stringify([FORMAT, codeFingerprint(), files.path, files.manifest, files.lock ?? null]);
}

/** A manifest's files as read now, their cache key, and the manifest validated from exactly them, if cached. */
export interface ManifestLookup {
  readonly files: ManifestFiles;
  readonly key: string;
  readonly cached: Manifest | undefined;
}

/** Read a manifest and its lock (synchronously: see readManifestFilesSync) and look them up. */
export function lookUpManifest(stateDir: string, manifestPath: string): ManifestLookup {
  return lookUpFiles(stateDir, readManifestFilesSync(manifestPath));
}

export function lookUpFiles(stateDir: string, files: ManifestFiles): ManifestLookup {
  const key = manifestCacheKey(files);
  let cached: Manifest | undefined;
  try {
    const data = JSON.parse(readFileSync(path.join(stateDir, CACHE_FILE), 'utf8')) as { key?: unknown; manifest?: Manifest };
    if (data.key === key) cached = data.manifest;
  } catch {
    /* no cache, or not ours: a miss */
  }
  return { files, key, cached };
}

/** Best effort: a cache that cannot be written costs the next start a parse, nothing else. */
export async function rememberManifest(stateDir: string, lookup: ManifestLookup, manifest: Manifest): Promise<void> {
  if (holdsCredentials(manifest)) return;
  await writeJsonAtomic(path.join(stateDir, CACHE_FILE), { key: lookup.key, manifest }).catch(() => undefined);
}

/** A presigned URL carries its credential in the query; nothing else in a manifest is secret. */
function holdsCredentials(manifest: Manifest): boolean {
  return manifest.entries.some((e) => e.source.kind === 'https' && new URL(e.source.url).search !== '');
}
