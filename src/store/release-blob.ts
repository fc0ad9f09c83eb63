import { lstat, rm } from 'node:fs/promises';
import { keyName, type ContentKey } from '../content-key.js';
import { ModelsyncError, errnoCode } from '../errors.js';
import { withReopen } from '../fs/estale.js';
import { isLive } from './gc.js';
import { readLeases, readRecords, storeNow } from './gc-scan.js';
import { blobPath, inBlobDir, type StoreLayout } from './layout.js';
import { entryIn } from '../fs/held-dir.js';

export interface ReleaseOptions {
  /** A reference record older than this protects nothing (gc's MODELSYNC_GC_REFS_MAX_AGE). */
  readonly refsMaxAgeMs: number;
  /** This process is fetching or publishing it (the caller knows). */
  readonly busy: boolean;
}

/**
 * Remove a blob the on-demand layer let go of, at once, when nothing else can want it: no other
 * name (no models dir on the volume links it), no live reference record names it (ours was
 * rewritten without it first), no lease on it, nothing in this process using it. Otherwise it
 * stays for gc, which collects it after its grace period like any unreferenced blob.
 *
 * Accepted risk, the same window gc's own last look leaves: a peer that records the key after we
 * read the records and links the blob after we removed it fails that publish (ENOENT) and fetches
 * the blob again on its next sync. Never wrong bytes: a blob is removed whole, by its name.
 */
export async function releaseBlob(store: StoreLayout, key: ContentKey, opts: ReleaseOptions): Promise<'removed' | 'kept'> {
  if (opts.busy) return 'kept';
  blobPath(store, key);
  const name = keyName(key);
  try {
    // In its shard folder held: a shard swapped for a symlink gets no unlink (fs/held-dir.ts).
    return await inBlobDir(store, key, async (at) => {
      const file = entryIn(at, key.hex);
      const st = await withReopen(() => lstat(file));
      if (!st.isFile() || st.nlink > 1) return 'kept';
      const now = await storeNow(store.at.tmp);
      const { records } = await readRecords(store);
      if (records.some((r) => isLive(r, now, opts.refsMaxAgeMs) && r.keys.includes(name))) return 'kept';
      if ((await readLeases(store)).leases.some((l) => l.key === name)) return 'kept';
      await rm(file);
      return 'removed';
    });
  } catch (e) {
    // Gone already, or a record we cannot read (gc refuses to guess, and so do we).
    if (errnoCode(e) === 'ENOENT' || (e instanceof ModelsyncError && e.code === 'E_CORRUPT')) return 'kept';
    throw e;
  }
}
