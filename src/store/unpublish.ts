import { lstat, readlink, unlink } from 'node:fs/promises';
import { ModelsyncError, errnoCode } from '../errors.js';
import { entryIn, holdDir } from '../fs/held-dir.js';
import { plainDest } from '../manifest/dest.js';
import { shown as quoted } from '../remote-value.js';
import type { FileStamp } from '../state/db.js';
import { fsyncDir, sameContentStamp, stampOf } from './blobs.js';

/** Whose file a dest is: 'ours' (what modelsync published there), 'changed' (someone else's now), 'absent'. */
export type Owner = 'ours' | 'changed' | 'absent';

/**
 * Remove a dest modelsync published, and only that (ownerIn). The dest's folders are held, one
 * at a time without following a symlink (fs/held-dir.ts): the unlink happens in the folder
 * checked, even if it is swapped for a symlink right after, and a symlinked folder on the way
 * makes the file someone else's ('changed'). A user could replace the file itself between the
 * check and the unlink: an accepted risk of a window of microseconds, since POSIX has no
 * unlink-if-this-inode.
 */
export async function unpublish(modelsDir: string, dest: string, blob: string, verified: FileStamp | undefined): Promise<'removed' | 'changed' | 'absent'> {
  return inDestDir<'removed' | 'changed' | 'absent'>(modelsDir, dest, async (final, dirAt) => {
    const owner = await ownerIn(final, blob, verified);
    if (owner !== 'ours') return owner;
    try {
      await unlink(final);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return 'absent';
      throw e;
    }
    await fsyncDir(dirAt);
    return 'removed';
  }, (owner) => owner);
}

/** Whose file `dest` is (see ownerIn), judged in its folder held, as unpublish judges it. */
export function ownerOf(modelsDir: string, dest: string, blob: string, verified: FileStamp | undefined): Promise<{ owner: Owner }> {
  return inDestDir(modelsDir, dest, async (final) => ({ owner: await ownerIn(final, blob, verified) }), (owner) => ({ owner }));
}

async function inDestDir<T>(modelsDir: string, dest: string, fn: (final: string, dirAt: string) => Promise<T>, notThere: (owner: 'changed' | 'absent') => T): Promise<T> {
  // Dests come back from the state DB here (published, on_demand): checked again where they
  // become a path, as publish does. A dot name would reach the store, whose blobs are "ours" by
  // inode, and removing one would take it from every models dir that publishes it.
  if (!plainDest(dest)) {
    throw new ModelsyncError('E_PATH_UNSAFE', `refusing to unpublish ${quoted(dest)}: not a FOLDER/FILE path of plain names`, { dest });
  }
  const segs = dest.split('/');
  let dir;
  try {
    dir = await holdDir(modelsDir, segs.slice(0, -1));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return notThere('absent');
    if (e instanceof ModelsyncError && e.code === 'E_PATH_UNSAFE') return notThere('changed');
    throw e;
  }
  try {
    return await fn(entryIn(dir.at, segs[segs.length - 1] ?? ''), dir.at);
  } finally {
    await dir.close();
  }
}

/**
 * Is the file at `final` the one modelsync published there? Known two ways: the state DB verified
 * this inode there (same size and mtime since; a link elsewhere moves only its ctime), or it is
 * the store blob's own inode (a hard link), or a symlink to the blob. A file someone changed or
 * replaced since is theirs now: 'changed'.
 */
async function ownerIn(final: string, blob: string, verified: FileStamp | undefined): Promise<Owner> {
  let link: boolean;
  try {
    link = (await lstat(final)).isSymbolicLink();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return 'absent';
    throw e;
  }
  if (link) return (await readlink(final).catch(() => undefined)) === blob ? 'ours' : 'changed';
  const now = await stampOf(final);
  if (!now) return 'changed';
  if (verified && sameContentStamp(now, verified)) return 'ours';
  const b = await stampOf(blob);
  return b && b.dev === now.dev && b.ino === now.ino ? 'ours' : 'changed';
}
