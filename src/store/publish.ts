import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, link, lstat, mkdir, readdir, rename, symlink, unlink } from 'node:fs/promises';
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
export async function publish(blob: string, modelsDir: string, dest: string, retries = 4): Promise<PublishMode> {
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
  await clearLeftoverTemps(dir, path.basename(final));
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
    // A concurrent publish of this dest (nodes sharing a models dir) cleared our temp as a
    // leftover: do it over; once any of them has renamed, the retry finds the blob 'present'.
    if (errnoCode(e) === 'ENOENT' && retries > 0) return publish(blob, modelsDir, dest, retries - 1);
    throw publishError(e, dest);
  }
  // rename() of two links to one inode (a concurrent publish of this blob got there first)
  // succeeds and does nothing: our temp name would stay behind.
  await unlink(tmp).catch(() => undefined);
  await fsyncDir(dir);
  return mode;
}

/**
 * A publish killed between its link and its rename leaves `.<name>.modelsync-<hex>` behind:
 * never a final path, but a hidden second name for a blob (a dangling symlink once gc removes
 * it). The next publish of the same name clears them; the names are ours alone.
 */
async function clearLeftoverTemps(dir: string, name: string): Promise<void> {
  const prefix = `.${name}.modelsync-`;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const n of names) {
    if (n.startsWith(prefix) && /^[0-9a-f]{12}$/.test(n.slice(prefix.length))) await unlink(path.join(dir, n)).catch(() => undefined);
  }
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
