import { lstat, readlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import type { FileStamp } from '../state/db.js';
import { fsyncDir, sameContentStamp, stampOf } from './blobs.js';

/**
 * Remove a dest modelsync published, and only that: the file must still be the inode verified at
 * publish time (same size and mtime), or a symlink to the blob, and no folder on the way may be a symlink
 * (one planted there could aim the unlink anywhere). A file someone changed or replaced since is
 * theirs now: left alone ('changed').
 */
export async function unpublish(modelsDir: string, dest: string, blob: string, verified: FileStamp | undefined): Promise<'removed' | 'changed' | 'absent'> {
  const segs = dest.split('/');
  let dir = modelsDir;
  for (const seg of segs.slice(0, -1)) {
    dir = path.join(dir, seg);
    try {
      const st = await lstat(dir);
      if (!st.isDirectory()) return 'changed';
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return 'absent';
      throw e;
    }
  }
  const final = path.join(dir, segs[segs.length - 1] ?? '');
  let link: boolean;
  try {
    link = (await lstat(final)).isSymbolicLink();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return 'absent';
    throw e;
  }
  if (link) {
    if ((await readlink(final).catch(() => undefined)) !== blob) return 'changed';
  } else {
    // The inode verified there, its size and mtime as they were (a link elsewhere moves its ctime).
    const now = await stampOf(final);
    if (!now || !verified || !sameContentStamp(now, verified)) return 'changed';
  }
  try {
    await unlink(final);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return 'absent';
    throw e;
  }
  await fsyncDir(dir);
  return 'removed';
}
