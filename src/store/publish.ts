import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, link, lstat, mkdir, rename, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import { ModelsyncError, errnoCode } from '../errors.js';
import { fsyncDir } from './blobs.js';

export type PublishMode = 'present' | 'hardlink' | 'symlink' | 'copy';

/**
 * Make `dest` under the models dir show the blob's bytes. Every folder on the way is checked
 * with lstat and a symlink is never followed for writing (a planted link could point anywhere);
 * the file appears by rename of a link made beside it, so a reader sees the old file or the new
 * one, never a half-written one. Hard link first (no extra space, same inode); symlink, then a
 * copy, where the file system refuses hard links.
 */
export async function publish(blob: string, modelsDir: string, dest: string): Promise<PublishMode> {
  const segs = dest.split('/');
  let dir = modelsDir;
  for (const seg of segs.slice(0, -1)) {
    dir = path.join(dir, seg);
    await ensureRealDir(dir, dest);
  }
  const final = path.join(dir, segs[segs.length - 1] ?? '');
  const blobSt = await lstat(blob);
  try {
    const cur = await lstat(final);
    if (cur.isDirectory()) throw new ModelsyncError('E_PUBLISH', `${dest} exists and is a directory`, { dest });
    if (cur.isFile() && cur.ino === blobSt.ino && cur.dev === blobSt.dev) return 'present';
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  const tmp = path.join(dir, `.${path.basename(final)}.modelsync-${randomBytes(6).toString('hex')}`);
  let mode: PublishMode = 'hardlink';
  try {
    await link(blob, tmp);
  } catch (e) {
    if (!['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK', 'ENOSYS'].includes(errnoCode(e) ?? '')) throw publishError(e, dest);
    try {
      await symlink(blob, tmp);
      mode = 'symlink';
    } catch {
      await copyFile(blob, tmp, constants.COPYFILE_FICLONE);
      mode = 'copy';
    }
  }
  try {
    await rename(tmp, final);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw publishError(e, dest);
  }
  await fsyncDir(dir);
  return mode;
}

async function ensureRealDir(dir: string, dest: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const st = await lstat(dir);
      if (st.isSymbolicLink()) {
        throw new ModelsyncError('E_PATH_UNSAFE', `${dest}: ${dir} is a symlink; refusing to write through it`, { dest });
      }
      if (!st.isDirectory()) throw new ModelsyncError('E_PATH_UNSAFE', `${dest}: ${dir} is not a directory`, { dest });
      return;
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
      try {
        await mkdir(dir);
      } catch (m) {
        if (errnoCode(m) !== 'EEXIST') throw publishError(m, dest);
      }
    }
  }
}

function publishError(e: unknown, dest: string): ModelsyncError {
  if (e instanceof ModelsyncError) return e;
  const code = errnoCode(e);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new ModelsyncError('E_DISK_FULL', `${dest}: disk full while publishing`, { dest, cause: e });
  return new ModelsyncError('E_PUBLISH', `${dest}: cannot publish (${code ?? String(e)})`, { dest, cause: e });
}

/** Is the published file still the blob (same inode), or a link to it? Decided by lstat alone. */
export async function publishedAs(blob: string, final: string): Promise<boolean> {
  try {
    const [b, f] = await Promise.all([lstat(blob), lstat(final)]);
    return f.isFile() && f.ino === b.ino && f.dev === b.dev;
  } catch {
    return false;
  }
}
