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
  db.statement(LINK_MOVED_CTIME).run(after.ctimeNs, before.dev, before.ino, before.size, before.mtimeNs, before.ctimeNs);
}

/**
 * Found by inode through the `verified_inode` index: without it each published link scanned
 * every row, and a sync of N new files spent N x N row visits (a third of a second in 2,000
 * small files, issue 15).
 */
export const LINK_MOVED_CTIME = 'UPDATE verified SET ctime_ns = ? WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ?';
