import { statfsSync } from 'node:fs';
import path from 'node:path';
import { ModelsyncError } from '../errors.js';
import { whyNotWritable } from '../os-errors.js';

/**
 * What SQLite's answer means for the state DB. Only a file SQLite itself calls malformed is
 * moved aside and rebuilt: a DB that is busy (another process holds its lock), on a full or
 * read-only disk, or unreadable for any other reason is a healthy index that must be kept, and
 * the failure is one line for the operator.
 */

/** SQLite's own verdict on a file that is not a sound database (quick_check included). */
export class MalformedDb extends Error {
  override readonly name = 'MalformedDb';
}

function sqliteCode(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null || !('code' in e) || typeof e.code !== 'string') return undefined;
  return e.code.startsWith('SQLITE_') ? e.code : undefined;
}

/** Less than a few pages free: SQLite's writes there cannot succeed. */
function diskFull(dir: string): boolean {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize < 64 * 1024;
  } catch {
    return false;
  }
}

/** SQLITE_CORRUPT / SQLITE_NOTADB (and their extended codes), or a quick_check that found damage. */
export function isMalformed(e: unknown): boolean {
  if (e instanceof MalformedDb) return true;
  const code = sqliteCode(e);
  return code !== undefined && (/^SQLITE_CORRUPT/.test(code) || /^SQLITE_NOTADB/.test(code));
}

/**
 * A ModelsyncError for the state DB's expected failures; anything else (a bug: bad SQL, a
 * misuse) is returned as it is, with its stack.
 */
export function stateDbError(e: unknown, file: string, busyTimeoutMs: number): unknown {
  if (e instanceof ModelsyncError) return e;
  const code = sqliteCode(e);
  if (code === undefined) return e;
  const at = `state DB ${file}`;
  if (/^SQLITE_(BUSY|LOCKED)/.test(code)) {
    return new ModelsyncError('E_STATE_LOCKED', `${at} is locked by another process (waited ${busyTimeoutMs / 1000} s): another modelsync, or a tool holding it open, on --state-dir; try again once it is done`, { cause: e, retryable: true });
  }
  // A full disk also shows as an I/O error: SQLite could not grow the -shm or -wal file.
  if (code === 'SQLITE_FULL' || (/^SQLITE_IOERR/.test(code) && diskFull(path.dirname(file)))) {
    return new ModelsyncError('E_DISK_FULL', `${at}: the state dir's disk is full (${code}); free space there`, { cause: e });
  }
  if (/^SQLITE_(READONLY|CANTOPEN|PERM|AUTH)/.test(code)) {
    const why = whyNotWritable(file);
    if (why !== undefined) return new ModelsyncError('E_NOT_WRITABLE', `${at} cannot be written: ${why}`, { cause: e });
    return new ModelsyncError('E_STATE_DB', `${at} cannot be opened for writing (${code})`, { cause: e });
  }
  if (/^SQLITE_(IOERR|NOMEM|PROTOCOL)/.test(code)) return new ModelsyncError('E_STATE_DB', `${at}: ${code} (${(e as Error).message})`, { cause: e });
  if (isMalformed(e)) return new ModelsyncError('E_CORRUPT', `${at} is malformed (${code}); it is moved aside and rebuilt on the next start`, { cause: e });
  return e;
}
