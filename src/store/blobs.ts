import type { BigIntStats } from 'node:fs';
import { link, lstat, open, rename, stat, unlink } from 'node:fs/promises';
import { entryIn, inDir } from '../fs/held-dir.js';
import { chmodNoFollow } from '../fs/no-follow.js';
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

/** link() errors of a file system that has no hard links (or refuses them here). */
export const NO_HARD_LINKS: ReadonlySet<string> = new Set(['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK', 'ENOSYS']);

/**
 * Where a commit's folder fsync goes. Without one, commitBlob fsyncs at once; a sync hands a
 * batch that fsyncs every touched folder in one pass before anything relies on the commits
 * (see SyncBatch).
 */
export interface DirSync {
  deferDirSync(dir: string): void;
}

/**
 * Where a blob is committed: `name` in the folder `base/segs...`. Each folder below `base` is
 * held while the name is made (fs/held-dir.ts): one swapped for a symlink is refused, never
 * followed. `shown` is `base` as configured: messages, and the folders told to fsync.
 */
export interface BlobPlace {
  readonly base: string;
  readonly shown: string;
  readonly segs: readonly string[];
  readonly name: string;
}

export interface CommitOptions {
  /** Defer the folder fsyncs to a batch. */
  readonly dirs?: DirSync | undefined;
  /**
   * 'link' commits with link() then unlink of the partial: it never replaces a blob a racing
   * writer committed first. Only for partials that nobody can adopt: between the link and the
   * unlink the partial and the blob are one inode, and an adopter that made it writable again
   * and resumed into it would be writing into a committed blob. Adoption goes by journals: such
   * a partial never has one (DownloadParams.fresh). 'rename' (default) is an lstat then a rename.
   */
  readonly how?: 'link' | 'rename';
  /** The partial is read-only already (its writer changed the mode through its own descriptor). */
  readonly readOnly?: boolean | undefined;
}

/**
 * Move a verified partial to its content address. The partial was fsync'ed by the downloader;
 * it becomes read-only, then appears at the final path with all its bytes in one step. If
 * another writer got there first its blob stays, with its inode (published hard links and peers'
 * state DBs name it), and ours is dropped.
 *
 * The folder entry is made durable by an fsync of the folder (and of the parents of folders it
 * had to make), now or (with `dirs`) before the sync that committed it relies on it. Until then a
 * power cut can only lose the new name, never show a partial file under it: the bytes were on
 * disk before the name existed.
 */
export async function commitBlob(partPath: string, place: BlobPlace, opts: CommitOptions = {}): Promise<'committed' | 'already-present'> {
  const { dirs } = opts;
  if (!opts.readOnly) await chmodNoFollow(partPath, 0o444);
  const made: string[] = [];
  const put = opts.how === 'link' ? linkNoReplace : renameNoReplace;
  const outcome = await inDir(place.base, place.segs, (at) => put(partPath, entryIn(at, place.name)), { create: true, shown: place.shown, made: (d) => made.push(d) });
  const toSync = outcome === 'committed' ? [...made, path.join(place.shown, ...place.segs)] : made;
  for (const d of toSync) {
    if (dirs) dirs.deferDirSync(d);
    else await fsyncDir(d);
  }
  return outcome;
}

async function linkNoReplace(partPath: string, finalPath: string): Promise<'committed' | 'already-present'> {
  try {
    await link(partPath, finalPath);
  } catch (e) {
    const code = errnoCode(e) ?? '';
    if (code === 'EEXIST') {
      await unlink(partPath).catch(() => undefined);
      return 'already-present';
    }
    if (!NO_HARD_LINKS.has(code)) throw e;
    return renameNoReplace(partPath, finalPath);
  }
  // Committed: a failure to drop the partial's name leaves a second, read-only name that gc clears.
  await unlink(partPath).catch(() => undefined);
  return 'committed';
}

async function renameNoReplace(partPath: string, finalPath: string): Promise<'committed' | 'already-present'> {
  try {
    await lstat(finalPath);
    await unlink(partPath);
    return 'already-present';
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  await rename(partPath, finalPath);
  return 'committed';
}

export async function stampOf(file: string): Promise<FileStamp | undefined> {
  try {
    const s = await stat(file, { bigint: true });
    if (!s.isFile()) return undefined;
    return stampFrom(s);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw e;
  }
}

/** A blob's stamp: its name itself, never what a symlink planted there points to (none then). */
export async function blobStampOf(file: string): Promise<FileStamp | undefined> {
  try {
    const s = await lstat(file, { bigint: true });
    return s.isFile() ? stampFrom(s) : undefined;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw e;
  }
}

export function stampFrom(s: BigIntStats): FileStamp {
  return { dev: s.dev.toString(), ino: s.ino.toString(), size: Number(s.size), mtimeNs: s.mtimeNs.toString(), ctimeNs: s.ctimeNs.toString() };
}

/** Unchanged since it was stamped: the same inode, size, mtime and ctime (see FileStamp). */
export function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return sameContentStamp(a, b) && a.ctimeNs === b.ctimeNs;
}

/** The same inode with the same size and mtime: only the ctime may differ (a link made or removed). */
export function sameContentStamp(a: FileStamp, b: FileStamp): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}
