import { realpathSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';

export interface ManifestWatch {
  close(): Promise<void>;
}

/**
 * Call `onChange` (debounced) when the manifest (or its lock file) may have changed. The manifest's directory is
 * watched, not the file: editors and `kubectl`/ConfigMap updates replace it by rename, which
 * a watch on the old inode would miss. ConfigMap volumes swap a `..data` symlink, so events on
 * `..*` names count too; the caller compares content, so a spurious call costs one read.
 */
export async function watchManifest(files: readonly string[], debounceMs: number, onChange: () => void, log: Logger): Promise<ManifestWatch> {
  const { watch } = await import('chokidar');
  const dirs = new Set<string>();
  const names = new Set<string>();
  for (const file of files) {
    dirs.add(path.dirname(file));
    names.add(path.basename(file));
    try {
      // A manifest that is a symlink to elsewhere: edits happen at the target.
      const real = realpathSync(file);
      dirs.add(path.dirname(real));
      names.add(path.basename(real));
    } catch {
      // Missing right now (mid-replace, or no lock file): the directory watch sees it come.
    }
  }
  const relevant = (p: string): boolean => {
    const base = path.basename(p);
    return dirs.has(p) || names.has(base) || base.startsWith('..');
  };
  let timer: NodeJS.Timeout | undefined;
  const watcher = watch([...dirs], {
    ignoreInitial: true,
    depth: 0,
    // Check the path string only: chokidar passes stats for some calls and not others.
    ignored: (p: string) => !relevant(p),
    atomic: true,
  });
  watcher.on('all', (event, p) => {
    log.debug({ event, path: p }, 'manifest directory event');
    clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  });
  watcher.on('error', (e) => log.warn({ err: e instanceof Error ? e.message : String(e) }, 'manifest watch error'));
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  return {
    async close() {
      clearTimeout(timer);
      await watcher.close();
    },
  };
}
