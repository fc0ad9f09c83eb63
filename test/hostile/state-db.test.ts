/**
 * hostile-world.md: "the state DB is deleted or corrupt -> rebuilt from the store; nothing lost".
 * The DB is only an index: losing it must cost a re-verify, never a download nor a model file.
 */
import { execFileSync } from 'node:child_process';
import { copyFile, open, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, type Sandbox } from '../support/cli.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { addModel, fileSha256, sha256, type TestModel } from '../support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;


const CONFIG = Buffer.from('{"hidden_size": 8}\n');
const OLD = '2020-01-01T00:00:00Z';

interface Synced {
  readonly m: TestModel;
  readonly expected: Record<string, string>;
  readonly blob: string;
  readonly inode: number;
}

/** A first, complete sync of an LFS model and a small plain (git-sha1) file. */
async function syncedOnce(): Promise<Synced> {
  sb = await sandbox(hub.endpoint);
  const m = addModel(hub, 400_000, { extra: [{ path: 'config.json', content: CONFIG, lfs: false }] });
  await sb.writeManifest([
    { source: m.uri, dest: 'checkpoints/s.safetensors' },
    { source: `hf://${m.repo}/config.json`, dest: 'configs/s.json' },
  ]);
  const r = await runCli(['sync'], sb.env());
  expect(r.code).toBe(0);
  const blob = path.join(sb.models, '.modelsync-store/blobs/sha256', m.sha256.slice(0, 2), m.sha256);
  return { m, expected: { 'checkpoints/s.safetensors': m.sha256, 'configs/s.json': sha256(CONFIG) }, blob, inode: (await stat(blob)).ino };
}

/** relatime moves an atime older than the mtime on any read: an old atime tells whether a file was read. */
function ageAtime(file: string): void {
  execFileSync('touch', ['-a', '-d', OLD, file]);
}
async function wasRead(file: string): Promise<boolean> {
  return (await stat(file)).atimeMs !== new Date(OLD).getTime();
}

/** The state DB's row for a verified file, verified_at included. */
function verifiedRow(file: string): unknown {
  const db = new Database(path.join(sb.state, 'state.db'), { readonly: true });
  try {
    return db.prepare('SELECT * FROM verified WHERE path = ?').get(file);
  } finally {
    db.close();
  }
}

function modelBytesServed(): number {
  return [...hub.stats.bytesServed.values()].reduce((a, b) => a + b, 0);
}

async function expectNothingLost(s: Synced): Promise<void> {
  const report = await checkFinalPaths(sb.models, s.expected);
  expect(report.corrupt).toEqual([]);
  expect(report.published).toBe(2);
  expect(report.blobs).toBe(2);
  // The very same file: republished from the store, not fetched again.
  expect((await stat(path.join(sb.models, 'checkpoints/s.safetensors'))).ino).toBe(s.inode);
}

const CORRUPTIONS: [string, (db: string) => Promise<void>][] = [
  ['garbage over the whole file', async (db) => writeFile(db, Buffer.alloc((await stat(db)).size, 'not a database! '))],
  ['the header page overwritten', async (db) => {
    const fh = await open(db, 'r+');
    await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, 0);
    await fh.close();
  }],
  ['cut in half', async (db) => truncate(db, Math.floor((await stat(db)).size / 2))],
];

describe('state DB lost or corrupt (hostile-world.md, the disk and the process)', () => {
  it('deleted between runs: the next sync rebuilds the index from the store; nothing downloaded, nothing lost', async () => {
    const s = await syncedOnce();
    for (const f of await readdir(sb.state)) if (f.startsWith('state.db')) await rm(path.join(sb.state, f));
    hub.resetStats();
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/2 entries: 0 present, 2 published, 0 failed/);
    expect(modelBytesServed()).toBe(0);
    await expectNothingLost(s);
    // The index is back: the run after is a warm start with no request at all.
    hub.resetStats();
    const warm = await runCli(['sync'], sb.env());
    expect(warm.stdout).toMatch(/2 entries: 2 present/);
    expect(hub.stats.requests).toEqual([]);
  });

  it.each(CORRUPTIONS)('corrupt (%s): moved aside, rebuilt, store blobs re-hashed once, nothing downloaded', async (_what, corrupt) => {
    const s = await syncedOnce();
    await corrupt(path.join(sb.state, 'state.db'));
    ageAtime(s.blob);
    hub.resetStats();
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/state DB was unreadable .*moved to .*state\.db\.corrupt-\d+/);
    expect(r.stderr).not.toContain('internal error');
    expect(modelBytesServed()).toBe(0);
    expect(await wasRead(s.blob)).toBe(true);
    await expectNothingLost(s);
    expect((await readdir(sb.state)).some((f) => /^state\.db\.corrupt-\d+$/.test(f))).toBe(true);
    // Once: the rebuilt index vouches for the blob from now on. (Not told by an old atime: setting
    // one moves the ctime, which is re-verified. Every re-hash rewrites the blob's row instead.)
    const row = verifiedRow(s.blob);
    expect(row).toBeDefined();
    hub.resetStats();
    const warm = await runCli(['sync'], sb.env());
    expect(warm.code).toBe(0);
    expect(warm.stdout).toMatch(/2 entries: 2 present/);
    expect(hub.stats.requests).toEqual([]);
    expect(verifiedRow(s.blob)).toEqual(row);
    expect(leakedSecrets(r.stdout, r.stderr, warm.stdout, warm.stderr)).toEqual([]);
  });

  it("corrupt with a dead run's write-ahead log beside it: the stale WAL is not replayed into the new DB", async () => {
    const s = await syncedOnce();
    const db = path.join(sb.state, 'state.db');
    // A WAL the way a SIGKILLed run leaves it: frames that were never checkpointed.
    const conn = new Database(db);
    conn.pragma('wal_autocheckpoint = 0');
    conn.prepare("INSERT OR REPLACE INTO meta VALUES ('stale', 'wal')").run();
    await copyFile(`${db}-wal`, path.join(sb.dir, 'wal'));
    conn.close();
    await copyFile(path.join(sb.dir, 'wal'), `${db}-wal`);
    await writeFile(db, Buffer.alloc(8192, 'not a database! '));
    hub.resetStats();
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/state DB was unreadable/);
    expect(modelBytesServed()).toBe(0);
    await expectNothingLost(s);
    const warm = await runCli(['sync'], sb.env());
    expect(warm.code).toBe(0);
    expect(warm.stderr).not.toMatch(/state DB was unreadable/);
    const rebuilt = new Database(db, { readonly: true });
    expect(rebuilt.prepare("SELECT value FROM meta WHERE key = 'stale'").get()).toBeUndefined();
    rebuilt.close();
  });

  it('verify --full after a corrupt DB re-hashes every published file and rebuilds the index', async () => {
    const s = await syncedOnce();
    await writeFile(path.join(sb.state, 'state.db'), Buffer.alloc(16_384, 'not a database! '));
    const full = await runCli(['verify', '--full'], sb.env());
    expect(full.code).toBe(0);
    expect(full.stdout).toMatch(/2\/2 verified \(full re-hash\)/);
    expect(full.stderr).toMatch(/state DB was unreadable/);
    const quick = await runCli(['verify'], sb.env());
    expect(quick.code).toBe(0);
    expect(quick.stdout).toMatch(/2\/2 verified \(stat level/);
    hub.resetStats();
    const warm = await runCli(['sync'], sb.env());
    expect(warm.code).toBe(0);
    expect(warm.stdout).toMatch(/2 entries: 2 present/);
    expect(hub.stats.requests).toEqual([]);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/s.safetensors'))).toBe(s.m.sha256);
  });
});
