import { rememberManifest, type ManifestLookup } from './cache.js';
import type { Manifest } from './types.js';

export interface Validated {
  readonly manifest: Manifest;
  /** Caches a manifest validated now (a hit: nothing to do); once the state dir exists, which opening the state DB ensures. */
  remember(stateDir: string): Promise<void>;
}

/**
 * The one way to a validated manifest (lock applied): the cached one when the files are those
 * validated last time, else validated now. The parser and zod load only on a miss.
 */
export async function validatedManifest(lookup: ManifestLookup): Promise<Validated> {
  const cached = lookup.cached;
  if (cached) return { manifest: cached, remember: () => Promise.resolve() };
  const { validateManifest } = await import('./validate.js');
  const manifest = validateManifest(lookup.files);
  return { manifest, remember: (stateDir) => rememberManifest(stateDir, lookup, manifest) };
}
