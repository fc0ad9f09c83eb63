import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { lookUpManifest, type ManifestLookup } from '../manifest/cache.js';
import { readManifestFiles, type ManifestFiles } from '../manifest/files.js';
import type { Manifest } from '../manifest/types.js';
import { validatedManifest } from '../manifest/validated.js';
import { openContext, type SyncContext } from './context.js';

export interface OpenWithManifestOptions {
  /** --update-lock: re-pin the entries that drifted from the lock file (never from the cache). */
  readonly updateLock: boolean;
  /** The lookup a warm attempt already made. */
  readonly lookup?: ManifestLookup | undefined;
  /** A warm attempt's open of the state DB replaced an unreadable one, for this reason. */
  readonly dbRecreated?: string | undefined;
  readonly clock?: Clock | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Once the manifest is known good, before the context (the store, the state DB) is opened. */
  readonly beforeOpen?: (() => Promise<void>) | undefined;
}

export interface ManifestAndContext {
  readonly manifest: Manifest;
  /** The text `manifest` was validated from (a daemon's reloads compare against it). */
  readonly files: ManifestFiles;
  readonly ctx: SyncContext;
}

/**
 * The manifest a sync runs on, validated and checked against its lock before anything else is
 * opened (a bad one exits 2 having touched nothing), then the sync context. `--update-lock` needs
 * the context to re-pin, so its drift is settled after.
 */
export async function openWithManifest(config: Config, log: Logger, manifestPath: string, o: OpenWithManifestOptions): Promise<ManifestAndContext> {
  if (!o.updateLock) {
    const lookup = o.lookup ?? lookUpManifest(config.stateDir, manifestPath);
    // Says why this start parsed (a cold start's cost), and, to the tests, that it did.
    if (!lookup.cached) log.debug({ manifest: manifestPath, validate: 'not-cached' }, 'validating the manifest');
    const valid = await validatedManifest(lookup);
    await o.beforeOpen?.();
    const ctx = await openContext(config, log, o.clock, o.dbRecreated);
    await valid.remember(config.stateDir);
    return { manifest: valid.manifest, files: lookup.files, ctx };
  }
  log.debug({ manifest: manifestPath, validate: 'update-lock' }, 'validating the manifest');
  const files = await readManifestFiles(manifestPath);
  const [{ readForLockUpdate }, { settleLock }] = await Promise.all([import('../manifest/validate.js'), import('./settle-lock.js')]);
  const read = readForLockUpdate(files);
  await o.beforeOpen?.();
  const ctx = await openContext(config, log, o.clock, o.dbRecreated);
  try {
    const settled = await settleLock(ctx, read, log, o.signal);
    return { manifest: settled.manifest, files: settled.lockText === undefined ? files : { ...files, lock: settled.lockText }, ctx };
  } catch (e) {
    ctx.close();
    throw e;
  }
}
