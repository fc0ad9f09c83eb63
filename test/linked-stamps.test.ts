/**
 * linkMovedCtime (state/linked-stamps.ts): every name of a hard-linked inode the state DB knows
 * takes the inode's new ctime, found by inode through an index. A real state DB in a temp dir.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { StateDb } from '../src/state/db.js';
import { LINK_MOVED_CTIME, linkMovedCtime } from '../src/state/linked-stamps.js';

let dir: string | undefined;
let db: StateDb | undefined;

afterEach(async () => {
  db?.close();
  db = undefined;
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const KEY = { algo: 'sha256', hex: 'cd'.repeat(32) } as const;

async function open(): Promise<StateDb> {
  dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-linked-'));
  db = StateDb.open(path.join(dir, 'state'));
  return db;
}

describe('linkMovedCtime', () => {
  it('moves the ctime of every row of that inode whose stamp was the verified one, and of no other', async () => {
    const db = await open();
    const before = { dev: '7', ino: '42', size: 10, mtimeNs: '100', ctimeNs: '200' };
    db.putVerified('/m/a', before, KEY);
    db.putVerified('/m/b', before, KEY);
    db.putVerified('/m/edited', { ...before, mtimeNs: '150' }, KEY);
    db.putVerified('/m/other', { ...before, ino: '43' }, KEY);
    linkMovedCtime(db, before, { ...before, ctimeNs: '300' });
    expect(db.verifiedStamp('/m/a')?.ctimeNs).toBe('300');
    expect(db.verifiedStamp('/m/b')?.ctimeNs).toBe('300');
    expect(db.verifiedStamp('/m/edited')?.ctimeNs).toBe('200');
    expect(db.verifiedStamp('/m/other')?.ctimeNs).toBe('200');
  });

  it('finds the rows by inode through an index, not a scan of every verified file', async () => {
    const db = await open();
    const plan = db.statement(`EXPLAIN QUERY PLAN ${LINK_MOVED_CTIME}`).all('1', '2', '3', 4, '5', '6') as { detail: string }[];
    const detail = plan.map((r) => r.detail).join('; ');
    expect(detail).toMatch(/USING INDEX verified_inode/);
    expect(detail).not.toMatch(/^SCAN verified$/m);
  });
});
