import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, link, lstat, readdir, rename, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import { ModelsyncError, errnoCode } from '../errors.js';
import { diskFullError, isDiskFull } from '../fs/disk-full.js';
import { entryIn, holdDir } from '../fs/held-dir.js';
import { plainDest } from '../manifest/dest.js';
import { NO_HARD_LINKS, fsyncDir } from './blobs.js';

export type PublishMode = 'present' | 'hardlink' | 'symlink' | 'copy';

/** A folder of the models dir: `segs` below `base` (the models dir as configured). */
export interface DirPlace {
  readonly base: string;
  readonly segs: readonly string[];
}

/**
 * What a sync shares across its publishes (see SyncBatch): folder fsyncs deferred to one pass,
 * and the names published per folder, whose leftover temps are cleared in one listing per folder
 * instead of one per file.
 */
export interface PublishBatch {
  deferDirSync(dir: string): void;
  published(dir: DirPlace, name: string): void;
}

export interface PublishOptions {
  readonly batch?: PublishBatch | undefined;
  /** The blob's inode, when the caller has just stat'ed it. */
  readonly blobId?: { readonly dev: string; readonly ino: string } | undefined;
  /** The blob's path as configured, what a symlink publish points to (default: `blob`). */
  readonly blobShown?: string | undefined;
  readonly retries?: number;
}

/**
 * Make `dest` under the models dir show the blob's bytes. The dest's folders are held open one
 * level at a time below the models dir, none of them a symlink (fs/held-dir.ts), and made there
 * when missing; every name is made in the folder held, so a folder swapped for a symlink, even
 * between two publishes of one sync, never receives a link. A new dest is a hard link made at
 * its final name in one step (the blob is complete, so the name shows all of it or nothing); a
 * dest that exists is replaced by rename of a link made beside it, so a reader sees the old file
 * or the new one, never a half-written one, and a planted symlink at the dest is replaced, never
 * written through. Hard link first (no extra space, same inode); symlink, then a copy, where the
 * file system refuses hard links. `blob` is where to reach the blob (its own folder held by the
 * caller, for a sync).
 */
export async function publish(blob: string, modelsDir: string, dest: string, opts: PublishOptions = {}): Promise<PublishMode> {
  const segs = dest.split('/');
  // Checked at manifest load too; here because a dest may also come from the state dir's manifest
  // cache, and this is where it becomes a path.
  if (!plainDest(dest)) {
    throw new ModelsyncError('E_PATH_UNSAFE', `refusing to publish to ${JSON.stringify(dest)}: not a FOLDER/FILE path of plain names`, { dest });
  }
  const place: DirPlace = { base: modelsDir, segs: segs.slice(0, -1) };
  const made: string[] = [];
  let dir;
  try {
    dir = await holdDir(modelsDir, place.segs, { create: true, made: (d) => made.push(d) });
  } catch (e) {
    throw publishError(e, dest);
  }
  try {
    // A new folder is an entry in its parent, which must reach the disk too.
    for (const d of made) {
      if (opts.batch) opts.batch.deferDirSync(d);
      else await fsyncDir(d);
    }
    return await publishIn(blob, dir.at, path.join(modelsDir, ...place.segs), place, segs[segs.length - 1] ?? '', dest, opts);
  } finally {
    await dir.close();
  }
}

async function publishIn(blob: string, dirAt: string, shownDir: string, place: DirPlace, name: string, dest: string, opts: PublishOptions): Promise<PublishMode> {
  const { batch } = opts;
  const retries = opts.retries ?? 4;
  const final = entryIn(dirAt, name);
  // Within a sync: the common case (a dest not there yet) costs one link().
  if (batch) {
    try {
      await link(blob, final);
      batch.deferDirSync(shownDir);
      batch.published(place, name);
      return 'hardlink';
    } catch (e) {
      // EEXIST: something is there (the blob already, an old version, a planted link): below.
      if (errnoCode(e) !== 'EEXIST' && !NO_HARD_LINKS.has(errnoCode(e) ?? '')) throw publishError(e, dest);
    }
  }
  const blobSt = opts.blobId ?? (await lstat(blob, { bigint: true }));
  try {
    const cur = await lstat(final, { bigint: true });
    if (cur.isDirectory()) throw new ModelsyncError('E_PUBLISH', `${dest} exists and is a directory`, { dest });
    if (cur.isFile() && String(cur.ino) === String(blobSt.ino) && String(cur.dev) === String(blobSt.dev)) {
      batch?.published(place, name);
      return 'present';
    }
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  if (batch) batch.published(place, name);
  else await clearLeftoverTemps(dirAt, new Set([name]));
  const tmp = entryIn(dirAt, `.${name}.modelsync-${randomBytes(6).toString('hex')}`);
  let mode: PublishMode = 'hardlink';
  try {
    await link(blob, tmp);
  } catch (e) {
    if (!NO_HARD_LINKS.has(errnoCode(e) ?? '')) throw publishError(e, dest);
    try {
      await symlink(opts.blobShown ?? blob, tmp);
      mode = 'symlink';
    } catch {
      // EXCL: the temp name is ours alone; never through something planted under it.
      await copyFile(blob, tmp, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL);
      mode = 'copy';
    }
  }
  try {
    await rename(tmp, final);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    // A concurrent publish of this dest (nodes sharing a models dir) cleared our temp as a
    // leftover: do it over; once any of them has renamed, the retry finds the blob 'present'.
    if (errnoCode(e) === 'ENOENT' && retries > 0) return publishIn(blob, dirAt, shownDir, place, name, dest, { ...opts, retries: retries - 1 });
    throw publishError(e, dest);
  }
  // rename() of two links to one inode (a concurrent publish of this blob got there first)
  // succeeds and does nothing: our temp name would stay behind.
  await unlink(tmp).catch(() => undefined);
  if (batch) batch.deferDirSync(shownDir);
  else await fsyncDir(shownDir);
  return mode;
}

/**
 * A publish killed between its link and its rename leaves `.<name>.modelsync-<hex>` behind:
 * never a final path, but a hidden second name for a blob (a dangling symlink once gc removes
 * it). The next publish of the same name clears them (a sync: once per folder, for every name
 * it published there); the names are ours alone. `dir` is a held folder's `at`.
 */
export async function clearLeftoverTemps(dir: string, names: ReadonlySet<string>): Promise<void> {
  let listing: string[];
  try {
    listing = await readdir(dir);
  } catch {
    return;
  }
  for (const n of listing) {
    const m = /^\.(.+)\.modelsync-[0-9a-f]{12}$/.exec(n);
    if (m && names.has(m[1] ?? '')) await unlink(entryIn(dir, n)).catch(() => undefined);
  }
}

function publishError(e: unknown, dest: string): ModelsyncError {
  if (e instanceof ModelsyncError) return e;
  const code = errnoCode(e);
  if (isDiskFull(e)) return diskFullError(e, `while publishing ${dest}`, { dest });
  return new ModelsyncError('E_PUBLISH', `${dest}: cannot publish (${code ?? String(e)})`, { dest, cause: e });
}
