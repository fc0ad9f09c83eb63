import { constants, statSync } from 'node:fs';
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ModelsyncError, errnoCode } from '../errors.js';
import { shown as quoted } from '../remote-value.js';

/**
 * Directories held open, so that writes in them are confined to them at the moment of the write.
 *
 * Node has no openat(2), but Linux resolves `/proc/self/fd/N/NAME` inside the directory that
 * descriptor N is open on, whatever its path has become since: a folder renamed away and replaced
 * by a symlink still gets our writes, and the symlink's target never does. So a folder is opened
 * one level at a time, each with O_NOFOLLOW relative to the one before it (a symlink anywhere
 * below the base is refused, never followed), and every create, rename, link and unlink in it
 * names `at/NAME`. The last component of those calls is never followed either: rename, link,
 * unlink and mkdir do not follow it, and opens add O_NOFOLLOW (or O_EXCL) themselves.
 *
 * Where /proc/self/fd cannot be used (not Linux, /proc not mounted), each folder is checked with
 * lstat right before the operation and the path is used: the residual race is a swap between
 * that check and the operation.
 */
export const HOLDS_DIRS: boolean = (() => {
  try {
    return process.platform === 'linux' && statSync('/proc/self/fd').isDirectory();
  } catch {
    return false;
  }
})();

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** A directory held open (or, without /proc/self/fd, checked): `at` names it for operations. */
export interface HeldDir {
  /** Its path, as configured: for messages and the state DB. */
  readonly shown: string;
  /** What to join names to when operating in it. */
  readonly at: string;
  close(): Promise<void>;
}

export interface HoldOptions {
  /** How `base` is shown in messages and told to `made` (when `base` is itself an `at` path). */
  readonly shown?: string | undefined;
  /** Make missing folders (each in the held parent). */
  readonly create?: boolean | undefined;
  /** Told of each folder made: its parent (shown path) has a new entry to fsync. */
  readonly made?: ((parentShown: string) => void) | undefined;
}

/**
 * Hold `base/segs...`. `base` is opened as given: the operator's path, symlinks in it allowed (a
 * models dir on /workspace -> /runpod-volume is common). Below it, no segment may be a symlink.
 */
export async function holdDir(base: string, segs: readonly string[], opts: HoldOptions = {}): Promise<HeldDir> {
  checkSegments(base, segs, opts);
  if (!HOLDS_DIRS) return checkDir(base, segs, opts);
  let shown = opts.shown ?? base;
  // The first folder is opened by `base/seg`: base's own components are followed, as given.
  let fh: FileHandle | undefined = segs.length === 0 ? await open(base, constants.O_RDONLY | constants.O_DIRECTORY) : undefined;
  try {
    for (const seg of segs) {
      const parentShown = shown;
      shown = path.join(shown, seg);
      const next = await openBelow(fh ? `/proc/self/fd/${fh.fd}` : base, seg, shown, parentShown, opts);
      await fh?.close();
      fh = next;
    }
  } catch (e) {
    await fh?.close().catch(() => undefined);
    throw e;
  }
  const held = fh as FileHandle;
  return { shown, at: `/proc/self/fd/${held.fd}`, close: () => held.close() };
}

/** holdDir, `fn` with the held directory, and close it whatever happens. */
export async function inDir<T>(base: string, segs: readonly string[], fn: (at: string) => Promise<T>, opts: HoldOptions = {}): Promise<T> {
  const dir = await holdDir(base, segs, opts);
  try {
    return await fn(dir.at);
  } finally {
    await dir.close();
  }
}

async function openBelow(parentAt: string, seg: string, shown: string, parentShown: string, opts: HoldOptions): Promise<FileHandle> {
  const at = `${parentAt}/${seg}`;
  for (let attempt = 0; ; attempt++) {
    try {
      return await open(at, DIR_FLAGS);
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT' && opts.create && attempt === 0) {
        try {
          await mkdir(at);
          opts.made?.(parentShown);
        } catch (m) {
          if (errnoCode(m) !== 'EEXIST') throw m;
        }
        continue;
      }
      if (code === 'ELOOP' || code === 'ENOTDIR') throw await notAFolder(at, shown, e);
      throw e;
    }
  }
}

/**
 * Without /proc/self/fd: lstat every folder below `base` now, make missing ones, use the path.
 * Exported for its test: it is what holdDir does where it cannot hold.
 */
export async function checkDir(base: string, segs: readonly string[], opts: HoldOptions = {}): Promise<HeldDir> {
  checkSegments(base, segs, opts);
  let shown = opts.shown ?? base;
  let at = base;
  for (const seg of segs) {
    const parentShown = shown;
    shown = path.join(shown, seg);
    at = path.join(at, seg);
    for (let attempt = 0; ; attempt++) {
      try {
        const st = await lstat(at);
        if (!st.isDirectory()) throw await notAFolder(at, shown, undefined);
        break;
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT' || !opts.create || attempt > 0) throw e;
        try {
          await mkdir(at);
          opts.made?.(parentShown);
        } catch (m) {
          if (errnoCode(m) !== 'EEXIST') throw m;
        }
      }
    }
  }
  return { shown, at, close: () => Promise.resolve() };
}

/**
 * Why `name` cannot be one entry of a folder, or undefined. A held folder confines only what is
 * named one entry below it: `a/b` would be resolved through `a` (followed if it is a symlink:
 * O_NOFOLLOW guards the last component only), `..` leaves it, and `path.join` of `at` and `..`
 * even drops the descriptor (`/proc/self/fd`). Every caller passes names it validated; this is
 * the last check, where they become paths.
 */
export function entryProblem(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (name === '.' || name === '..') return 'is "." or ".."';
  if (name.includes('/')) return 'contains "/"';
  if (name.includes('\0')) return 'contains a NUL byte';
  return undefined;
}

/** `name` in the held folder `at` (a HeldDir's `at`): E_PATH_UNSAFE unless it is one plain entry. */
export function entryIn(at: string, name: string): string {
  const why = entryProblem(name);
  if (why !== undefined) throw new ModelsyncError('E_PATH_UNSAFE', `refusing the name ${quoted(name)} in a held folder: it ${why}`);
  return `${at}/${name}`;
}

function checkSegments(base: string, segs: readonly string[], opts: HoldOptions): void {
  for (const seg of segs) {
    const why = entryProblem(seg);
    if (why !== undefined) throw new ModelsyncError('E_PATH_UNSAFE', `refusing the folder name ${quoted(seg)} below ${opts.shown ?? base}: it ${why}`);
  }
}

async function notAFolder(at: string, shown: string, cause: unknown): Promise<ModelsyncError> {
  const st = await lstat(at).catch(() => undefined);
  const what = st?.isSymbolicLink() ? 'is a symlink; refusing to write through it' : 'is not a directory';
  return new ModelsyncError('E_PATH_UNSAFE', `${shown} ${what}`, { cause });
}
