import type { BigIntStats } from 'node:fs';
import { chmod, link, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
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
 * (see SyncBatch), and remembers which shard folders exist so each is created once.
 */
export interface DirSync {
  deferDirSync(dir: string): void;
  readonly knownDirs: Set<string>;
}

/**
 * Make sure `dir` exists. Folders it had to create are new entries in their parents: those
 * parents need an fsync too before a file in `dir` can be called durable.
 */
export async function ensureDir(dir: string, dirs: DirSync | undefined): Promise<void> {
  if (dirs?.knownDirs.has(dir)) return;
  const first = await mkdir(dir, { recursive: true });
  if (first !== undefined) {
    for (let d = dir; ; d = path.dirname(d)) {
      const parent = path.dirname(d);
      if (dirs) dirs.deferDirSync(parent);
      else await fsyncDir(parent);
      if (d === first || parent === d) break;
    }
  }
  dirs?.knownDirs.add(dir);
}

export interface CommitOptions {
  /** Defer the folder fsync to a batch (and skip the mkdir of folders it knows exist). */
  readonly dirs?: DirSync | undefined;
  /**
   * 'link' commits with link() then unlink of the partial: it never replaces a blob a racing
   * writer committed first. Only for partials that nobody can adopt: between the link and the
   * unlink the partial and the blob are one inode, and an adopter that made it writable again
   * and resumed into it would be writing into a committed blob. The caller removes the partial's
   * journal first (adoption goes by journals). 'rename' (default) is a stat then a rename.
   */
  readonly how?: 'link' | 'rename';
}

/**
 * Move a verified partial to its content address. The partial was fsync'ed by the downloader;
 * it becomes read-only, then appears at the final path with all its bytes in one step. If
 * another writer got there first its blob stays, with its inode (published hard links and peers'
 * state DBs name it), and ours is dropped.
 *
 * The folder entry is made durable by an fsync of the folder, now or (with `dirs`) before the
 * sync that committed it relies on it. Until then a power cut can only lose the new name, never
 * show a partial file under it: the bytes were on disk before the name existed.
 */
export async function commitBlob(partPath: string, finalPath: string, opts: CommitOptions = {}): Promise<'committed' | 'already-present'> {
  const { dirs } = opts;
  await chmod(partPath, 0o444);
  const dir = path.dirname(finalPath);
  await ensureDir(dir, dirs);
  const put = opts.how === 'link' ? linkNoReplace : renameNoReplace;
  let outcome: 'committed' | 'already-present';
  try {
    outcome = await put(partPath, finalPath);
  } catch (e) {
    // A shard folder we made earlier was removed since (gc of an empty store, by hand). ENOENT
    // for a partial that is gone is thrown again on the second try.
    if (errnoCode(e) !== 'ENOENT' || !dirs?.knownDirs.has(dir)) throw e;
    dirs.knownDirs.delete(dir);
    await ensureDir(dir, dirs);
    outcome = await put(partPath, finalPath);
  }
  if (outcome === 'committed') {
    if (dirs) dirs.deferDirSync(dir);
    else await fsyncDir(dir);
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
    await stat(finalPath);
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
