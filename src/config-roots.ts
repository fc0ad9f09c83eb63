import { realpathSync } from 'node:fs';
import path from 'node:path';
import { ModelsyncError, errnoCode } from './errors.js';

/**
 * A store or state dir that a manifest `dest` could reach would let a manifest overwrite
 * verified blobs (which other models dirs on the volume publish) or the state DB. Dests never
 * contain a dot-named segment (dest.ts), so a dir inside the models dir is out of their reach
 * only below a dot name, like the default MODELS/.modelsync-store. Anything else is refused
 * before anything is opened: exit 2, naming both dirs. Compared by real path, so a symlink in
 * either path does not hide one inside the other.
 */
export function checkRoots(modelsDir: string, storeDir: string, stateDir: string): void {
  const models = realAsFar(modelsDir);
  const store = realAsFar(storeDir);
  const state = realAsFar(stateDir);
  if (inside(store, models) !== undefined) {
    throw new ModelsyncError('E_CONFIG', `the models dir ${modelsDir} is inside the store dir ${storeDir} (or is it): publishing would write into the store; use separate dirs`);
  }
  for (const [what, dir, real] of [['store dir', storeDir, store], ['state dir', stateDir, state]] as const) {
    const rel = inside(models, real);
    if (rel === undefined || rel.some((s) => s.startsWith('.'))) continue;
    // The state dir's files at the top of the models dir are out of reach: a dest has a folder.
    if (what === 'state dir' && rel.length === 0) continue;
    const where = rel.length === 0 ? `is the models dir ${modelsDir}` : `is in the models dir ${modelsDir} (at "${rel.join('/')}")`;
    throw new ModelsyncError('E_CONFIG', `the ${what} ${dir} ${where}, where a manifest dest could reach it: put it in a dot-folder of the models dir (as the default store, .modelsync-store) or outside it`);
  }
}

/** `inner`'s segments below `outer` when inside it or equal to it ([]), else undefined. */
function inside(outer: string, inner: string): string[] | undefined {
  const rel = path.relative(outer, inner);
  if (rel === '') return [];
  if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) return undefined;
  return rel.split(path.sep);
}

/** The real path of `p` as far as it exists (a store or state dir may not exist yet), plus the rest. */
function realAsFar(p: string): string {
  const rest: string[] = [];
  for (let head = path.resolve(p); ; ) {
    try {
      return path.join(realpathSync.native(head), ...rest);
    } catch (e) {
      const parent = path.dirname(head);
      if ((errnoCode(e) !== 'ENOENT' && errnoCode(e) !== 'ENOTDIR') || parent === head) return path.resolve(p);
      rest.unshift(path.basename(head));
      head = parent;
    }
  }
}
