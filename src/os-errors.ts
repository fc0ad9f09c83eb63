import { accessSync, constants, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { ModelsyncError, errnoCode, type ErrorCode } from './errors.js';
import { DISK_FULL_ERRNOS } from './fs/disk-full.js';

/**
 * Failed system calls that say something about the machine (a limit, a full or read-only disk),
 * not about modelsync's logic: each is one clear line and an exit code, never "internal error".
 * ENOENT, EEXIST, EISDIR and the like are not here: on our own folders they mean a bug or a race.
 */
const MACHINE: Readonly<Record<string, { readonly code: ErrorCode; readonly text: string }>> = {
  EMFILE: { code: 'E_LIMIT', text: 'too many open files for this process (raise `ulimit -n`, or lower --connections)' },
  ENFILE: { code: 'E_LIMIT', text: 'too many open files on this machine (the system-wide file table is full)' },
  ENOMEM: { code: 'E_LIMIT', text: 'out of memory (a `ulimit -v` or a container memory limit?)' },
  ...Object.fromEntries(Object.entries(DISK_FULL_ERRNOS).map(([errno, text]) => [errno, { code: 'E_DISK_FULL' as const, text }])),
  EROFS: { code: 'E_NOT_WRITABLE', text: 'read-only file system' },
  EACCES: { code: 'E_NOT_WRITABLE', text: 'permission denied' },
  EPERM: { code: 'E_NOT_WRITABLE', text: 'operation not permitted' },
  ENAMETOOLONG: { code: 'E_PATH_UNSAFE', text: 'file name too long for this file system' },
  EIO: { code: 'E_IO', text: 'input/output error (a failing disk or a lost network mount)' },
};

/** `e` as a ModelsyncError when it is one of the machine's conditions above; undefined otherwise. */
export function machineError(e: unknown, what: string): ModelsyncError | undefined {
  if (e instanceof ModelsyncError) return e;
  const errno = errnoCode(e);
  const m = errno === undefined ? undefined : MACHINE[errno];
  if (!m) return undefined;
  return new ModelsyncError(m.code, `${what}: ${m.text} (${errno})`, { cause: e });
}

/**
 * Why `target` (a folder, or a file we write in place) cannot be written, or undefined when it
 * can: the nearest part of it that exists is asked. Node's recursive mkdir on a read-only mount
 * reports ENOENT, not EROFS: this finds the truth.
 */
export function whyNotWritable(target: string): string | undefined {
  const want = path.resolve(target);
  let d = want;
  while (!existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  let isDir: boolean;
  try {
    isDir = statSync(d).isDirectory();
  } catch (e) {
    return `${d}: ${describe(e)}`;
  }
  if (!isDir && d !== want) return `${d}: not a directory`;
  // A file is written in place, and SQLite makes its -wal and -shm beside it.
  for (const p of isDir ? [d] : [d, path.dirname(d)]) {
    try {
      accessSync(p, constants.W_OK);
    } catch (e) {
      return `${p}: ${describe(e)}`;
    }
  }
  return undefined;
}

function describe(e: unknown): string {
  const errno = errnoCode(e);
  const m = errno === undefined ? undefined : MACHINE[errno];
  return m ? `${m.text} (${errno})` : e instanceof Error ? e.message : String(e);
}

/**
 * A folder we must create or write failed: the machine's reason as one line (E_NOT_WRITABLE for
 * a read-only or foreign folder), or the original error when it is none of those (a bug).
 */
export function unwritableError(e: unknown, dir: string, what: string): unknown {
  const known = machineError(e, `${what} ${dir}`);
  if (known && known.code !== 'E_NOT_WRITABLE') return known;
  const why = whyNotWritable(dir);
  if (why !== undefined) return new ModelsyncError('E_NOT_WRITABLE', `${what} ${dir} is not writable: ${why}`, { cause: e });
  return known ?? e;
}

/** "open /some/file": which call failed on what, as Node's errors say it. */
export function syscallText(e: unknown): string {
  const o = (typeof e === 'object' && e !== null ? e : {}) as { syscall?: unknown; path?: unknown };
  const call = typeof o.syscall === 'string' ? o.syscall : 'a system call';
  return typeof o.path === 'string' ? `${call} ${o.path}` : call;
}
