import { existsSync, lstatSync, mkdirSync, renameSync, statfsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ModelsyncError } from '../errors.js';
import { unwritableError } from '../os-errors.js';
import { MalformedDb, isMalformed, stateDbError } from './db-errors.js';
import { migrate } from './db-migrate.js';

/** statfs magic numbers of file systems where SQLite's locking cannot be trusted. */
const NETWORK_FS: ReadonlyMap<number, string> = new Map([
  [0x6969, 'NFS'],
  [0x517b, 'SMB'],
  [0xff534d42, 'CIFS'],
  [0xfe534d42, 'SMB2'],
  [0x65735546, 'FUSE'],
  [0x00c36400, 'CephFS'],
  [0x0bd00bd0, 'Lustre'],
  [0x47504653, 'GPFS'],
  [0x01021997, '9p'],
]);

export interface OpenOptions {
  /** Test seam: pretend statfs answered this file system type. */
  readonly statfsType?: number;
  readonly onRecreated?: (reason: string) => void;
  /** How long to wait for another process's lock before failing (SQLite's busy timeout). */
  readonly busyTimeoutMs?: number;
}

/** better-sqlite3's default, kept: long enough for any transaction of a sync, short for a CLI. */
export const DEFAULT_BUSY_TIMEOUT_MS = 5000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verified (
  path TEXT PRIMARY KEY, dev TEXT NOT NULL, ino TEXT NOT NULL, size INTEGER NOT NULL,
  mtime_ns TEXT NOT NULL, algo TEXT NOT NULL, hex TEXT NOT NULL, verified_at INTEGER NOT NULL,
  ctime_ns TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS verified_inode ON verified (dev, ino);
CREATE TABLE IF NOT EXISTS hf_revisions (
  repo_type TEXT NOT NULL, repo TEXT NOT NULL, revision TEXT NOT NULL, commit_sha TEXT NOT NULL,
  resolved_at INTEGER NOT NULL, PRIMARY KEY (repo_type, repo, revision));
CREATE TABLE IF NOT EXISTS hf_files (
  repo_type TEXT NOT NULL, repo TEXT NOT NULL, commit_sha TEXT NOT NULL, path TEXT NOT NULL,
  size INTEGER NOT NULL, algo TEXT NOT NULL, hex TEXT NOT NULL,
  PRIMARY KEY (repo_type, repo, commit_sha, path));
CREATE TABLE IF NOT EXISTS identities (
  models_dir TEXT NOT NULL, store_dir TEXT NOT NULL, node_id TEXT NOT NULL, created_at INTEGER NOT NULL,
  PRIMARY KEY (models_dir, store_dir));
CREATE TABLE IF NOT EXISTS civitai_versions (
  version_id INTEGER PRIMARY KEY, data TEXT NOT NULL, resolved_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS published (
  models_dir TEXT NOT NULL, manifest TEXT NOT NULL, dest TEXT NOT NULL, source TEXT NOT NULL, algo TEXT NOT NULL,
  hex TEXT NOT NULL, size INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (models_dir, dest, manifest));
CREATE TABLE IF NOT EXISTS on_demand (
  models_dir TEXT NOT NULL, dest TEXT NOT NULL, source TEXT NOT NULL, algo TEXT NOT NULL, hex TEXT NOT NULL,
  size INTEGER NOT NULL, state TEXT NOT NULL, last_used INTEGER NOT NULL, created_at INTEGER NOT NULL,
  PRIMARY KEY (models_dir, dest));
`;

/** An open state DB file, and what its errors are reported with. */
export interface OpenedDb {
  readonly db: Database.Database;
  readonly file: string;
  readonly busyTimeoutMs: number;
}

/**
 * STATE/state.db opened, or one clear error: only on a local file system, never through a
 * symlink, checked (quick_check) and at the current schema; a file SQLite calls malformed is
 * moved aside and made anew.
 */
export function openStateFile(stateDir: string, opts: OpenOptions = {}): OpenedDb {
  // Asked of the folder that will hold it (or its nearest existing parent): refused before
  // anything is created on the network file system.
  const type = opts.statfsType ?? statfsSync(nearestExisting(stateDir)).type;
  const fsName = NETWORK_FS.get(type >>> 0);
  if (fsName !== undefined) {
    throw new ModelsyncError('E_STATE_DIR', `state dir ${stateDir} is on ${fsName}: SQLite needs a local file system (use --state-dir on local disk; the store may stay on the shared volume)`);
  }
  try {
    mkdirSync(stateDir, { recursive: true });
  } catch (e) {
    throw unwritableError(e, stateDir, 'state dir');
  }
  const file = path.join(stateDir, 'state.db');
  refuseLinks(file);
  const busyMs = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const opened = (): OpenedDb => {
    try {
      return { db: openChecked(file, busyMs), file, busyTimeoutMs: busyMs };
    } catch (e) {
      throw isMalformed(e) ? e : stateDbError(e, file, busyMs);
    }
  };
  try {
    return opened();
  } catch (e) {
    if (!isMalformed(e)) throw e;
    // Only a file SQLite calls malformed is moved aside, not repaired: the store is the truth
    // and a verify rebuilds the index. A busy, full or read-only one stays where it is.
    const aside = `${file}.corrupt-${Date.now()}`;
    try {
      renameSync(file, aside);
    } catch (err) {
      throw unwritableError(err, stateDir, 'state dir');
    }
    opts.onRecreated?.(`state DB was unreadable (${(e as Error).message}); moved to ${aside}`);
    try {
      return opened();
    } catch (again) {
      throw stateDbError(again, file, busyMs);
    }
  }
}

/**
 * SQLite opens its files by name, following a symlink at any of them: one planted at the DB, its
 * write-ahead log or its shared memory would have SQLite write wherever it points. Checked right
 * before the open (better-sqlite3 has no O_NOFOLLOW); the state dir is local and the operator's,
 * and the race left is a swap between this check and SQLite's open.
 */
function refuseLinks(file: string): void {
  for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) {
    if (lstatSync(f, { throwIfNoEntry: false })?.isSymbolicLink()) {
      throw new ModelsyncError('E_STATE_DIR', `${f} is a symlink; refusing to open the state DB through it (remove it: the state DB is rebuilt from the store)`);
    }
  }
}

function nearestExisting(dir: string): string {
  let d = path.resolve(dir);
  while (!existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
}

let addon: string | null | undefined;

/**
 * better-sqlite3's compiled addon, where its build puts it. Without it, the package finds the
 * addon through `bindings`, which walks a stack trace and tries a dozen paths on every start.
 */
function addonPath(): string | null {
  if (addon === undefined) {
    try {
      addon = createRequire(import.meta.url).resolve('better-sqlite3/build/Release/better_sqlite3.node');
    } catch {
      addon = null;
    }
  }
  return addon;
}

function openChecked(file: string, busyTimeoutMs: number): Database.Database {
  // The busy timeout is set by the constructor, before any statement: even switching to WAL
  // needs the lock, and a busy answer must never be read as damage.
  const nativeBinding = addonPath();
  const db = new Database(file, nativeBinding === null ? { timeout: busyTimeoutMs } : { timeout: busyTimeoutMs, nativeBinding });
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new MalformedDb(`quick_check: ${String(check)}`);
    db.exec(SCHEMA);
    migrate(db);
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}
