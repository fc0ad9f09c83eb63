import { statSync } from 'node:fs';
import type Database from 'better-sqlite3';

/**
 * The state DB's schema version (PRAGMA user_version). 0: before issue 13. 1: `verified` has
 * `ctime_ns`. A newer DB (a newer modelsync wrote it) is used as it is: its columns are a
 * superset, and nothing here is ever dropped.
 */
export const SCHEMA_VERSION = 1;

/**
 * Bring a DB up to SCHEMA_VERSION. Adding the ctime to rows written without one: a row whose
 * file still has the dev, inode, size and mtime it was verified with takes the file's ctime now,
 * so an upgrade keeps warm starts warm (no network, no model byte read); that carries forward
 * exactly the trust the older modelsync gave the row. Any other row keeps an empty ctime, which
 * never matches: its file is verified again by the next sync. IMMEDIATE, so two processes
 * opening one DB at once migrate it once.
 */
export function migrate(db: Database.Database): void {
  if (Number(db.pragma('user_version', { simple: true })) >= SCHEMA_VERSION) return;
  db.transaction(() => {
    if (Number(db.pragma('user_version', { simple: true })) >= SCHEMA_VERSION) return;
    const columns = db.pragma('table_info(verified)') as { name: string }[];
    if (!columns.some((c) => c.name === 'ctime_ns')) {
      db.exec("ALTER TABLE verified ADD COLUMN ctime_ns TEXT NOT NULL DEFAULT ''");
      const rows = db.prepare('SELECT path, dev, ino, size, mtime_ns FROM verified').all() as { path: string; dev: string; ino: string; size: number; mtime_ns: string }[];
      const set = db.prepare('UPDATE verified SET ctime_ns = ? WHERE path = ?');
      for (const r of rows) {
        const s = statSync(r.path, { bigint: true, throwIfNoEntry: false });
        if (s?.isFile() && String(s.dev) === r.dev && String(s.ino) === r.ino && Number(s.size) === r.size && String(s.mtimeNs) === r.mtime_ns) set.run(String(s.ctimeNs), r.path);
      }
    }
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}
