import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { lookUpFiles } from '../manifest/cache.js';
import { readManifestFiles, sameManifestFiles, type ManifestFiles } from '../manifest/files.js';
import type { Manifest } from '../manifest/types.js';
import { validatedManifest } from '../manifest/validated.js';
import type { DaemonState } from './state.js';

/**
 * The manifest in force. A reload that finds the file invalid (unreadable, bad, drifted from
 * its lock) reports it in the state and keeps the last good manifest: a typo in an edit must
 * not stop a running node.
 */
export class ManifestHolder {
  constructor(
    public current: Manifest,
    private files: ManifestFiles,
    private readonly stateDir: string,
    private readonly state: DaemonState,
    private readonly log: Logger,
  ) {
    state.setManifest(current);
  }

  get path(): string {
    return this.files.path;
  }

  /** The files a watch should react to. */
  get watched(): readonly string[] {
    return [this.files.path, this.files.lockPath];
  }

  /** Re-read the files; true when a different valid manifest is now in force. */
  async reload(why: string): Promise<boolean> {
    let files: ManifestFiles;
    let m: Manifest;
    try {
      files = await readManifestFiles(this.files.path);
      if (sameManifestFiles(files, this.files)) {
        if (this.state.manifest) this.state.manifest.error = undefined;
        return false;
      }
      const valid = await validatedManifest(lookUpFiles(this.stateDir, files));
      await valid.remember(this.stateDir);
      m = valid.manifest;
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
