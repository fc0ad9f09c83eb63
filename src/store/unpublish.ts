import { lstat, readlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import type { FileStamp } from '../state/db.js';
import { fsyncDir, sameContentStamp, stampOf } from './blobs.js';

/** Whose file a dest is: 'ours' (what modelsync published there), 'changed' (someone else's now), 'absent'. */
export type Owner = 'ours' | 'changed' | 'absent';

/**
 * Is the file at dest the one modelsync published there? Known two ways: the state DB verified
 * this inode there (same size and mtime since; a link elsewhere moves only its ctime), or it is
 * the store blob's own inode (a hard link), or a symlink to the blob. No folder on the way may be
 * a symlink (one planted there could aim an unlink anywhere). A file someone changed or replaced
 * since is theirs now: 'changed'.
 */
export async function ownerOf(modelsDir: string, dest: string, blob: string, verified: FileStamp | undefined): Promise<{ owner: Owner; dir: string; final: string }> {
  const segs = dest.split('/');
  let dir = modelsDir;
  for (const seg of segs.slice(0, -1)) {
    dir = path.join(dir, seg);
    try {
      const st = await lstat(dir);
      if (!st.isDirectory()) return { owner: 'changed', dir, final: dir };
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return { owner: 'absent', dir, final: dir };
      throw e;
    }
  }
  const final = path.join(dir, segs[segs.length - 1] ?? '');
  let link: boolean;
  try {
    link = (await lstat(final)).isSymbolicLink();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return { owner: 'absent', dir, final };
    throw e;
  }
  if (link) return { owner: (await readlink(final).catch(() => undefined)) === blob ? 'ours' : 'changed', dir, final };
  const now = await stampOf(final);
  if (!now) return { owner: 'changed', dir, final };
  if (verified && sameContentStamp(now, verified)) return { owner: 'ours', dir, final };
  const b = await stampOf(blob);
  return { owner: b && b.dev === now.dev && b.ino === now.ino ? 'ours' : 'changed', dir, final };
}

/**
 * Remove a dest modelsync published, and only that (ownerOf). A user could replace the file
 * between the check and the unlink: an accepted risk of a window of microseconds, since POSIX
 * has no unlink-if-this-inode.
 */
export async function unpublish(modelsDir: string, dest: string, blob: string, verified: FileStamp | undefined): Promise<'removed' | 'changed' | 'absent'> {
  const { owner, dir, final } = await ownerOf(modelsDir, dest, blob, verified);
  if (owner !== 'ours') return owner;
  try {
    await unlink(final);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return 'absent';
    throw e;
  }
  await fsyncDir(dir);
  return 'removed';
}
