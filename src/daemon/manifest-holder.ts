import { readFile } from 'node:fs/promises';
import { ModelsyncError, errnoCode } from '../errors.js';
import type { Logger } from '../log.js';
import path from 'node:path';
import type { Manifest } from '../manifest/types.js';
import type { DaemonState } from './state.js';

/** The manifest's text and its lock's: what a reload compares to decide whether anything changed. */
export interface ManifestFiles {
  readonly manifest: string;
  readonly lock: string;
}

/**
 * The manifest in force. A reload that finds the file invalid (unreadable, bad, drifted from
 * its lock) reports it in the state and keeps the last good manifest: a typo in an edit must
 * not stop a running node.
 */
export class ManifestHolder {
  constructor(
    readonly path: string,
    public current: Manifest,
    private files: ManifestFiles,
    private readonly state: DaemonState,
    private readonly log: Logger,
  ) {
    state.setManifest(current);
  }

  /** The files a watch should react to. */
  get watched(): readonly string[] {
    return [this.path, lockFileOf(this.path)];
  }

  /** Re-read the files; true when a different valid manifest is now in force. */
  async reload(why: string): Promise<boolean> {
    let files: ManifestFiles;
    let m: Manifest;
    try {
      files = await readManifestFiles(this.path);
      if (files.manifest === this.files.manifest && files.lock === this.files.lock) {
        if (this.state.manifest) this.state.manifest.error = undefined;
        return false;
      }
      // Loaded here, not at start: a warm start takes the manifest from the cache.
      const { parseWithLock } = await import('../sync/use-lock.js');
      m = await parseWithLock(files.manifest, this.path);
    } catch (e) {
      this.reject(why, e);
      return false;
    }
    this.current = m;
    this.files = files;
    this.state.setManifest(m);
    this.log.info({ manifest: this.path, entries: m.entries.length, why }, 'manifest reloaded');
    return true;
  }

  private reject(why: string, e: unknown): void {
    const message = e instanceof Error ? e.message : String(e);
    if (!(e instanceof ModelsyncError)) this.log.error({ err: e instanceof Error ? e.stack : message }, 'unexpected error reading the manifest (a bug)');
    if (this.state.manifest) this.state.manifest.error = message;
    this.log.error({ manifest: this.path, why, err: message }, 'manifest rejected; the last valid one stays in force');
  }
}

export async function readManifestFiles(file: string): Promise<ManifestFiles> {
  let manifest: string;
  try {
    manifest = await readFile(file, 'utf8');
  } catch (e) {
    throw new ModelsyncError('E_USAGE', `cannot read manifest ${file}: ${(e as Error).message}`, { cause: e });
  }
  let lock = '';
  try {
    lock = await readFile(lockFileOf(file), 'utf8');
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw new ModelsyncError('E_USAGE', `cannot read lock file ${lockFileOf(file)}: ${(e as Error).message}`, { cause: e });
  }
  return { manifest, lock };
}

/**
 * lockPathFor's rule (`models.yaml` -> `models.lock.json`), restated because manifest/lock.ts
 * loads zod, which a warm start avoids; test/daemon-units.test.ts holds the two together.
 */
export function lockFileOf(manifestPath: string): string {
  const base = path.basename(manifestPath).replace(/\.(ya?ml|json)$/i, '');
  return path.join(path.dirname(manifestPath), `${base}.lock.json`);
}
