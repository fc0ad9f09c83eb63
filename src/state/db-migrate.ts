import { statSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';

/**
 * The state DB's schema version (PRAGMA user_version). 0: before issue 13. 1: `verified` has
 * `ctime_ns`. 2: what was published is kept per models dir and manifest (`published`), no longer
 * per dest alone (`entries`, left as it was). A newer DB (a newer modelsync wrote it) is used as
 * it is: its columns are a superset, and nothing here is ever dropped.
 */
export const SCHEMA_VERSION = 2;

/**
 * Bring a DB up to SCHEMA_VERSION, one step per version. IMMEDIATE, so two processes opening one
 * DB at once migrate it once.
 */
export function migrate(db: Database.Database): void {
  if (version(db) >= SCHEMA_VERSION) return;
  db.transaction(() => {
    const from = version(db);
    if (from >= SCHEMA_VERSION) return;
    if (from < 1) addCtimes(db);
    if (from < 2) carryEntries(db);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

function version(db: Database.Database): number {
  return Number(db.pragma('user_version', { simple: true }));
}

/**
 * Adding the ctime to rows written without one: a row whose file still has the dev, inode, size
 * and mtime it was verified with takes the file's ctime now, so an upgrade keeps warm starts warm
 * (no network, no model byte read); that carries forward exactly the trust the older modelsync
 * gave the row. Any other row keeps an empty ctime, which never matches: its file is verified
 * again by the next sync.
 */
function addCtimes(db: Database.Database): void {
  const columns = db.pragma('table_info(verified)') as { name: string }[];
  if (columns.some((c) => c.name === 'ctime_ns')) return;
  db.exec("ALTER TABLE verified ADD COLUMN ctime_ns TEXT NOT NULL DEFAULT ''");
  const rows = db.prepare('SELECT path, dev, ino, size, mtime_ns FROM verified').all() as { path: string; dev: string; ino: string; size: number; mtime_ns: string }[];
  const set = db.prepare('UPDATE verified SET ctime_ns = ? WHERE path = ?');
  for (const r of rows) {
    const s = statSync(r.path, { bigint: true, throwIfNoEntry: false });
    if (s?.isFile() && String(s.dev) === r.dev && String(s.ino) === r.ino && Number(s.size) === r.size && String(s.mtimeNs) === r.mtime_ns) set.run(String(s.ctimeNs), r.path);
  }
}

/**
 * `entries` rows named a dest alone: which models dir they were published into is found from
 * the installs this DB knows (`identities`) and a verified row of that content at that path;
 * which manifest published them was never kept, so they are carried over under manifest '' (see
 * PublishedTable: the first manifest that names the dest takes the row over, and nothing is ever
 * unpublished from a row that no manifest took over). A row no install explains is dropped: its
 * dest is verified again by the next sync, as without a row.
 */
function carryEntries(db: Database.Database): void {
  if (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entries'").get() === undefined) return;
  const dirs = (db.prepare('SELECT DISTINCT models_dir FROM identities').all() as { models_dir: string }[]).map((r) => r.models_dir);
  const rows = db.prepare('SELECT dest, source, algo, hex, size, updated_at FROM entries').all() as { dest: string; source: string; algo: string; hex: string; size: number; updated_at: number }[];
  const verified = db.prepare('SELECT algo, hex FROM verified WHERE path = ?');
  const put = db.prepare("INSERT OR IGNORE INTO published (models_dir, manifest, dest, source, algo, hex, size, updated_at) VALUES (?, '', ?, ?, ?, ?, ?, ?)");
  for (const r of rows) {
    for (const dir of dirs) {
      const v = verified.get(path.join(dir, r.dest)) as { algo: string; hex: string } | undefined;
      if (v?.algo === r.algo && v.hex === r.hex) put.run(dir, r.dest, r.source, r.algo, r.hex, r.size, r.updated_at);
    }
  }
}
