import type { FileStamp, StateDb } from './db.js';

/**
 * A hard link we just made to a verified inode moved its ctime, and with it the stamp of every
 * other name of that inode the state DB knows (other dests published from the same blob, by this
 * or an earlier job). Those whose stamp was exactly the verified one before the link get the new
 * ctime: nothing but our link changed them. Without this, each new dest of a blob would make the
 * others look changed, and the next sync or request would re-hash the blob (a warm start would
 * not be one).
 */
export function linkMovedCtime(db: StateDb, before: FileStamp, after: FileStamp): void {
  if (before.ctimeNs === after.ctimeNs) return;
  db.statement('UPDATE verified SET ctime_ns = ? WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ?').run(after.ctimeNs, before.dev, before.ino, before.size, before.mtimeNs, before.ctimeNs);
}
