/**
 * hostile-world.md: "the state DB locked by another process, or its dir full/read-only -> waits
 * or fails with one line; only a malformed DB is moved aside" (issue 13, class 10). The DB is an
 * index a second modelsync, a sqlite3 shell or a backup may hold at any moment: busy is not
 * corrupt, and a healthy index moved aside costs every blob a re-hash.
 */
import { execFile } from 'node:child_process';
import { readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StateDb } from '../../src/state/db.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { freePort, killAll, startRun, waitFor } from '../support/daemon-harness.js';
import { holdLock, type DbHolder } from '../support/db-holder.js';
import { rawRequest } from '../support/http-get.js';
import { sha256 } from '../support/models.js';
import { mountTmpfs, unmount } from '../support/tmpfs.js';

const run = promisify(execFile);
const A = Buffer.from('model A bytes\n'.repeat(2000));
const B = Buffer.from('model B bytes\n'.repeat(3000));

let web: ByteServer;
let sb: Sandbox;
const holders: DbHolder[] = [];
const mounts: string[] = [];

beforeAll(async () => {
  web = await startByteServer({ files: { '/a.gguf': A, '/b.gguf': B } });
});
afterAll(async () => {
  await web.close();
});
afterEach(async () => {
  await killAll();
  for (const h of holders.splice(0)) h.child.kill('SIGKILL');
  for (const m of mounts.splice(0).reverse()) await unmount(m);
  await sb?.cleanup();
});

/** Can this machine mount (tmpfs, bind)? Decided once, so that skips are visible. */
async function probeMount(): Promise<string | undefined> {
  const s = await sandbox();
  const r = await mountTmpfs(path.join(s.dir, 'probe'), 1024 * 1024);
  if (r.ok) await unmount(path.join(s.dir, 'probe'));
  await s.cleanup();
  return r.ok ? undefined : r.reason;
}
const mountRefused = await probeMount();
if (mountRefused !== undefined) console.warn(`state-db-busy.test: mount refused (${mountRefused}); the full and read-only state dir cases are skipped`);

const ENTRY_A = (): Record<string, unknown> => ({ source: `${web.url}/a.gguf`, dest: 'checkpoints/a.gguf', sha256: sha256(A) });
const ENTRY_B = (): Record<string, unknown> => ({ source: `${web.url}/b.gguf`, dest: 'checkpoints/b.gguf', sha256: sha256(B) });

async function synced(): Promise<Record<string, string>> {
  sb = await sandbox();
  await sb.writeManifest([ENTRY_A()]);
  const r = await runCli(['sync'], sb.env());
  expect(r.code).toBe(0);
  return sb.env({ MODELSYNC_STATE_BUSY_TIMEOUT_MS: '300' });
}

/** The DB file's identity, and whether anything was ever moved aside beside it. */
async function stateFiles(dir = sb.state): Promise<{ ino: number; asides: string[] }> {
  return { ino: (await stat(path.join(dir, 'state.db'))).ino, asides: (await readdir(dir)).filter((f) => f.includes('corrupt')) };
}

function oneClearLine(r: CliResult, pattern: RegExp): void {
  expect(r.stderr).not.toContain('internal error');
  expect(r.stderr).not.toMatch(/\n\s+at .*\.js:\d+/);
  expect(`${r.stdout}\n${r.stderr}`.split('\n').filter((l) => pattern.test(l))).toHaveLength(1);
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
}

async function hold(kind: 'exclusive' | 'write'): Promise<DbHolder> {
  const h = await holdLock(path.join(sb.state, 'state.db'), kind);
  holders.push(h);
  return h;
}

describe('a busy state DB is not a corrupt one (issue 13, class 10)', () => {
  it('locked by another process: a warm sync and a cold one fail in one line, exit 1; the DB is never moved aside; once released all is as before', async () => {
    const env = await synced();
    const before = await stateFiles();
    const h = await hold('exclusive');
    // Warm: everything in place (the bin's warm path opens the DB first).
    const warm = await runCli(['sync'], env);
    expect(warm.code).toBe(1);
    oneClearLine(warm, /state DB .*state\.db is locked by another process \(waited 0\.3 s\)/);
    // Cold: a new entry to fetch.
    await sb.writeManifest([ENTRY_A(), ENTRY_B()]);
    const cold = await runCli(['sync'], env);
    expect(cold.code).toBe(1);
    oneClearLine(cold, /is locked by another process/);
    // The other commands that open it say the same.
    for (const cmd of [['plan'], ['status'], ['verify']]) {
      const r = await runCli(cmd, env);
      expect(r.code, cmd.join(' ')).toBe(1);
      oneClearLine(r, /is locked by another process/);
    }
    expect(await stateFiles()).toEqual(before);
    await h.release();
    const after = await runCli(['sync'], env);
    expect(after.code).toBe(0);
    expect(after.stderr).not.toMatch(/state DB was unreadable/);
    expect(after.stdout).toMatch(/2 entries: 1 present, 1 published, 0 failed/);
    expect(await stateFiles()).toEqual(before);
  });

  it('a writer holding its transaction while a sync starts is waited for (busy timeout before anything else)', async () => {
    const env = await synced();
    const h = await hold('write');
    await sb.writeManifest([ENTRY_A(), ENTRY_B()]);
    const pending = runCli(['sync'], { ...env, MODELSYNC_STATE_BUSY_TIMEOUT_MS: '60000' });
    // The sync reads (WAL lets it) and fetches; its first write waits for the holder's commit.
    await waitFor('the new model fetched', () => web.requests.some((q) => q.path === '/b.gguf'));
    await h.release();
    const r = await pending;
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/1 published/);
    expect(r.stderr).not.toMatch(/unreadable|locked/);
  });

  it('in-process: StateDb.open of a locked DB throws E_STATE_LOCKED and leaves the file alone; a malformed one is still moved aside', async () => {
    await synced();
    const h = await hold('exclusive');
    expect(() => StateDb.open(sb.state, { busyTimeoutMs: 50 })).toThrow(expect.objectContaining({ code: 'E_STATE_LOCKED' }) as Error);
    expect((await readdir(sb.state)).some((f) => f.includes('corrupt'))).toBe(false);
    await h.release();
    await writeFile(path.join(sb.state, 'state.db'), Buffer.alloc(8192, 'not a database! '));
    let why: string | undefined;
    StateDb.open(sb.state, { busyTimeoutMs: 50, onRecreated: (w) => (why = w) }).close();
    expect(why).toMatch(/moved to .*state\.db\.corrupt-\d+/);
  });

  it('the daemon keeps running when another process locks its DB mid-run: that sync fails with E_STATE_LOCKED, the DB is kept, the next resync works', async () => {
    sb = await sandbox();
    await sb.writeManifest([{ ...ENTRY_A(), required: false }]);
    const port = await freePort();
    const d = startRun([], sb.env({ MODELSYNC_STATE_BUSY_TIMEOUT_MS: '300' }), port);
    await waitFor('the first sync', async () => (await d.get('/readyz'))?.status === 200);
    await waitFor('the background sync', async () => (await d.status()).sync.last?.reason === 'startup: all models' || undefined);
    const before = await stateFiles();
    // A write lock (a CLI sync's transaction, a backup): the daemon's own connection keeps the
    // DB open in WAL mode, so nobody can take an exclusive one meanwhile.
    const h = await hold('write');
    await writeFile(sb.manifest, JSON.stringify({ version: 1, models: [{ ...ENTRY_A(), required: false }, { ...ENTRY_B(), required: false }] }));
    const res = await rawRequest(`${d.controlUrl}/resync`, { method: 'POST', timeoutMs: 30_000 });
    const outcome = JSON.parse(res.body.toString()) as { ok: boolean; error?: { code: string }; report?: { entries: { state: string; error?: { code: string } }[] } };
    expect(outcome.ok).toBe(false);
    const codes = [outcome.error?.code, ...(outcome.report?.entries.map((e) => e.error?.code) ?? [])].filter((c) => c !== undefined);
    expect(codes.length).toBeGreaterThan(0);
    expect(new Set(codes)).toEqual(new Set(['E_STATE_LOCKED']));
    expect((await d.get('/healthz'))?.status).toBe(200);
    expect(d.child.exitCode).toBeNull();
    await h.release();
    const again = await rawRequest(`${d.controlUrl}/resync`, { method: 'POST', timeoutMs: 30_000 });
    expect(JSON.parse(again.body.toString())).toMatchObject({ ok: true });
    expect(await stateFiles()).toEqual(before);
    expect(d.stderr()).not.toMatch(/internal error|unexpected error|state DB was unreadable/);
  });

  it.skipIf(mountRefused !== undefined)('a read-only state dir: one line naming EROFS, exit 1; the DB is not moved aside; a state dir that cannot be created says so too', async () => {
    const env = await synced();
    await sb.writeManifest([ENTRY_A(), ENTRY_B()]);
    const before = await stateFiles();
    await run('mount', ['--bind', sb.state, sb.state]);
    mounts.push(sb.state);
    await run('mount', ['-o', 'remount,bind,ro', sb.state]);
    const r = await runCli(['sync'], env);
    expect(r.code).toBe(1);
    oneClearLine(r, /state DB .* cannot be written: .*read-only file system \(EROFS\)/);
    expect(await stateFiles()).toEqual(before);
    const fresh = await runCli(['sync'], { ...env, MODELSYNC_STATE_DIR: path.join(sb.state, 'new', 'state') });
    expect(fresh.code).toBe(1);
    oneClearLine(fresh, /state dir .* is not writable: .*read-only file system \(EROFS\)/);
  });

  it.skipIf(mountRefused !== undefined)('a full state dir: the sync fails in one line (disk full, exit 1), the DB is not moved aside, and works again once there is room', async () => {
    sb = await sandbox();
    const state = path.join(sb.dir, 'small-state');
    const r0 = await mountTmpfs(state, 256 * 1024);
    if (!r0.ok) throw new Error(r0.reason);
    mounts.push(state);
    const env = sb.env({ MODELSYNC_STATE_DIR: state, MODELSYNC_STATE_BUSY_TIMEOUT_MS: '300' });
    await sb.writeManifest([ENTRY_A()]);
    expect((await runCli(['sync'], env)).code).toBe(0);
    const before = await stateFiles(state);
    // Fill what is left, then ask for rows to be written.
    const filler = path.join(state, 'filler');
    await writeFile(filler, Buffer.alloc(0));
    for (let i = 0; ; i++) {
      try {
        await writeFile(filler, Buffer.alloc(4096), { flag: 'a' });
      } catch {
        break;
      }
      if (i > 10_000) throw new Error('tmpfs never filled');
    }
    await sb.writeManifest([ENTRY_A(), ENTRY_B()]);
    const r = await runCli(['sync'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).not.toContain('internal error');
    oneClearLine(r, /state DB .*: the state dir's disk is full/);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/unexpected error|SqliteError/);
    expect(await stateFiles(state)).toEqual(before);
    await writeFile(filler, '');
    const again = await runCli(['sync'], env);
    expect(again.code).toBe(0);
    expect(again.stderr).not.toMatch(/state DB was unreadable/);
  });

  it('the state DB path is in a folder that cannot exist (a file where the state dir should be): one line, not an internal error', async () => {
    sb = await sandbox();
    await sb.writeManifest([ENTRY_A()]);
    const blocker = path.join(sb.dir, 'blocker');
    await writeFile(blocker, 'a file, not a folder');
    const r = await runCli(['sync'], sb.env({ MODELSYNC_STATE_DIR: path.join(blocker, 'state') }));
    expect(r.code).toBe(1);
    oneClearLine(r, /state dir .* is not writable: .*blocker: not a directory/);
  });
});
