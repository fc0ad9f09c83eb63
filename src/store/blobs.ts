import { chmod, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import type { FileStamp } from '../state/db.js';

/** fsync a directory so a rename in it survives power loss. Some file systems refuse; that is fine. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    /* EISDIR/EINVAL on some platforms and network file systems */
  } finally {
    await fh?.close();
  }
}

/**
 * Move a verified partial to its content address. The partial was fsync'ed by the downloader;
 * it becomes read-only, then appears at the final path in one rename. If another writer won the
 * race the blob is already there with the same content, and ours is simply dropped.
 */
export async function commitBlob(partPath: string, finalPath: string): Promise<'committed' | 'already-present'> {
  await chmod(partPath, 0o444);
  await mkdir(path.dirname(finalPath), { recursive: true });
  try {
    await stat(finalPath);
    await unlink(partPath);
    return 'already-present';
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  await rename(partPath, finalPath);
  await fsyncDir(path.dirname(finalPath));
  return 'committed';
}

export async function stampOf(file: string): Promise<FileStamp | undefined> {
  try {
    const s = await stat(file, { bigint: true });
    if (!s.isFile()) return undefined;
    return { dev: s.dev.toString(), ino: s.ino.toString(), size: Number(s.size), mtimeNs: s.mtimeNs.toString() };
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw e;
  }
}

export function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}
