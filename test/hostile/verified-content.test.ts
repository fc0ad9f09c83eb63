/**
 * Issue 13, classes 3 and 4: verified content is never destroyed by a manifest that disagrees
 * with it, and a final path whose metadata changed since it was verified is re-verified and
 * repaired. A published hard link is the blob's inode: editing it in place edits the blob, which
 * must then be moved aside (STORE/quarantine), never served again, and fetched anew.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, leakedSecrets, runCli, sandbox, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { makeSafetensors, startHub, type Hub } from '../support/hub.js';
import { addModel, exists, fileSha256, sha256, type TestModel } from '../support/models.js';

const web = { bytes: makeSafetensors(160_000, 61) };
let server: ByteServer;
let hub: Hub;
let sb: Sandbox;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  server = await startByteServer({ files: { '/w.safetensors': web.bytes } });
});
afterAll(async () => {
  await Promise.all([hub.close(), server.close()]);
});
afterEach(async () => {
  await sb?.cleanup();
});

interface JsonEntry {
  dest: string;
  state: string;
  error?: { code: string; message: string };
}

async function sync(args: string[] = [], extra: Record<string, string> = {}): Promise<{ code: number | null; entries: JsonEntry[]; stderr: string }> {
  const r = await runCli(['sync', '--json', ...args], sb.env(extra));
  expect(r.stderr).not.toMatch(/internal error|unexpected error/);
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  return { code: r.code, entries: (JSON.parse(r.stdout) as { entries: JsonEntry[] }).entries, stderr: r.stderr };
}

const store = (): string => path.join(sb.models, '.modelsync-store');
const blobOf = (hex: string): string => path.join(store(), 'blobs', 'sha256', hex.slice(0, 2), hex);
const cdnBytes = (): number => [...hub.stats.bytesServed.values()].reduce((a, b) => a + b, 0);

/** Overwrite 4 bytes in the middle of a file, in place: same inode, same size. */
async function scribble(file: string, opts: { keepMtime?: boolean } = {}): Promise<void> {
  const before = await stat(file, { bigint: true });
  const fh = await open(file, 'r+');
  await fh.write(Buffer.from('EVIL'), 0, 4, Math.floor(Number(before.size) / 2));
  await fh.close();
  // Put the mtime back, to the nanosecond: only the ctime (which nobody can set) still tells.
  const ns = before.mtimeNs;
  if (opts.keepMtime) execFileSync('touch', ['-m', '-d', `@${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}`, file]);
  const after = await stat(file, { bigint: true });
  expect(after.ino).toBe(before.ino);
  expect(after.size).toBe(before.size);
  if (opts.keepMtime) expect(after.mtimeNs).toBe(before.mtimeNs);
  expect(after.ctimeNs).not.toBe(before.ctimeNs);
}

async function syncedModel(bytes = 300_000): Promise<{ m: TestModel; dest: string; inode: number }> {
  sb = await sandbox(hub.endpoint);
  const m = addModel(hub, bytes);
  await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
  expect((await sync()).code).toBe(0);
  const dest = path.join(sb.models, 'checkpoints/m.safetensors');
  return { m, dest, inode: (await stat(dest)).ino };
}

async function quarantined(): Promise<string[]> {
  return (await readdir(path.join(store(), 'quarantine')).catch(() => [] as string[])).sort();
}

describe('a manifest that disagrees with verified content (issue 13, class 3)', () => {
  it('an https entry with a size one byte off fails that entry; the verified blob another models dir publishes stays', async () => {
    sb = await sandbox();
    const entry = { source: `${server.url}/w.safetensors`, dest: 'checkpoints/w.safetensors', sha256: sha256(web.bytes) };
    await sb.writeManifest([entry]);
    expect((await sync()).code).toBe(0);
    const blob = blobOf(sha256(web.bytes));
    const inode = (await stat(blob)).ino;

    const other = path.join(sb.dir, 'models-b');
    await mkdir(other);
    await sb.writeManifest([{ ...entry, size: web.bytes.length + 1 }]);
    const asked = server.requests.length;
    const b = await sync(['--models-dir', other, '--store-dir', store()], { MODELSYNC_STATE_DIR: path.join(sb.dir, 'state-b') });
    expect(await exists(blob)).toBe(true);
    expect((await stat(blob)).ino).toBe(inode);
    expect(await fileSha256(blob)).toBe(sha256(web.bytes));
    expect(b.code).toBe(1);
    expect(b.entries[0]?.error?.code).toBe('E_SIZE_MISMATCH');
    expect(b.entries[0]?.error?.message).toContain(String(web.bytes.length + 1));
    // Decided from the store alone: the content is proven, the manifest is wrong.
    expect(server.requests.length).toBe(asked);
    expect(await exists(path.join(other, 'checkpoints/w.safetensors'))).toBe(false);

    // The first models dir is untouched and still warm.
    await sb.writeManifest([entry]);
    const a = await sync();
    expect(a.entries.map((e) => e.state)).toEqual(['present']);
    expect(server.requests.length).toBe(asked);
    expect((await stat(path.join(sb.models, 'checkpoints/w.safetensors'))).ino).toBe(inode);
  });

  it('a lock file edited to a wrong size fails that entry the same way, and keeps the blob', async () => {
    const { m } = await syncedModel();
    expect((await runCli(['lock'], sb.env())).code).toBe(0);
    const lockFile = path.join(sb.dir, 'manifest.lock.json');
    const lock = JSON.parse(await readFile(lockFile, 'utf8')) as { entries: { size: number }[] };
    (lock.entries[0] as { size: number }).size -= 1;
    await writeFile(lockFile, JSON.stringify(lock, null, 2));
    // Another models dir, so the dest's own record cannot answer first.
    const other = path.join(sb.dir, 'models-b');
    await mkdir(other);
    hub.resetStats();
    const r = await sync(['--models-dir', other, '--store-dir', store()], { MODELSYNC_STATE_DIR: path.join(sb.dir, 'state-b') });
    expect(await fileSha256(blobOf(m.sha256))).toBe(m.sha256);
    expect(r.code).toBe(1);
    expect(r.entries[0]?.error?.code).toBe('E_SIZE_MISMATCH');
    expect(cdnBytes()).toBe(0);
  });
});

describe('a final path whose metadata changed (issue 13, class 4)', () => {
  it('a published file overwritten in place is detected by the next sync, its blob quarantined, fetched again', async () => {
    const { m, dest, inode } = await syncedModel();
    await scribble(dest);
    hub.resetStats();
    const r = await sync();
    expect(await fileSha256(dest)).toBe(m.sha256);
    expect(r.code).toBe(0);
    expect(r.entries.map((e) => e.state)).toEqual(['published']);
    expect((await stat(dest)).ino).not.toBe(inode);
    expect(cdnBytes()).toBe(m.content.length);
    expect(r.stderr).toContain('moved to quarantine');
    // The bad bytes are kept aside as evidence, never in blobs/ again.
    const q = await quarantined();
    expect(q).toHaveLength(1);
    expect(q[0]?.startsWith(`sha256-${m.sha256}.`)).toBe(true);
    expect((await stat(path.join(store(), 'quarantine', q[0] ?? ''))).ino).toBe(inode);
    expect((await checkFinalPaths(sb.models, { 'checkpoints/m.safetensors': m.sha256 })).corrupt).toEqual([]);
    // And the repair is remembered: a warm start again.
    hub.resetStats();
    expect((await sync()).entries.map((e) => e.state)).toEqual(['present']);
    expect(hub.stats.requests).toEqual([]);
  });

  it('the same with the mtime put back: the ctime still tells, and the file is repaired', async () => {
    const { m, dest } = await syncedModel();
    await scribble(dest, { keepMtime: true });
    const quick = await runCli(['verify'], sb.env());
    expect(quick.code).toBe(1);
    expect(quick.stdout).toMatch(/unverified +checkpoints\/m\.safetensors/);
    const r = await sync(['--refresh']);
    expect(await fileSha256(dest)).toBe(m.sha256);
    expect(r.code).toBe(0);
    expect(await quarantined()).toHaveLength(1);
  });

  it('two dests of one blob, and the blob edited in the store itself: every dest repaired in one sync', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 200_000);
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/a.safetensors' },
      { source: m.uri, dest: 'unet/b.safetensors' },
    ]);
    expect((await sync()).code).toBe(0);
    await scribble(blobOf(m.sha256), { keepMtime: true });
    const r = await sync();
    expect(r.code).toBe(0);
    const report = await checkFinalPaths(sb.models, { 'checkpoints/a.safetensors': m.sha256, 'unet/b.safetensors': m.sha256 });
    expect(report.corrupt).toEqual([]);
    expect(report.published).toBe(2);
  });

  it('verify --full that finds a corrupt file repairs it (quarantine, fetch), and exits 0 only once the bytes are right', async () => {
    const { m, dest } = await syncedModel();
    await scribble(dest, { keepMtime: true });
    const full = await runCli(['verify', '--full', '--json'], sb.env());
    expect(full.stderr).not.toMatch(/internal error|unexpected error/);
    const rows = (JSON.parse(full.stdout) as { entries: { state: string; detail?: string }[] }).entries;
    expect(rows.map((x) => x.state)).toEqual(['repaired']);
    expect(rows[0]?.detail).toMatch(/expected [0-9a-f]{64}, got [0-9a-f]{64}/);
    expect(full.code).toBe(0);
    expect(await fileSha256(dest)).toBe(m.sha256);
    expect(await quarantined()).toHaveLength(1);

    // Where it cannot be fetched again, it is reported corrupt: exit 1.
    await scribble(dest, { keepMtime: true });
    hub.setFaults(m.sha256, { status503: 1000 });
    const down = await runCli(['verify', '--full', '--json'], sb.env({ MODELSYNC_RETRY_ATTEMPTS: '1' }));
    hub.clearFaults();
    expect(down.code).toBe(1);
    expect((JSON.parse(down.stdout) as { entries: { state: string }[] }).entries.map((x) => x.state)).toEqual(['corrupt']);
    expect(await exists(dest)).toBe(true);
  });

  it('gc clears quarantined files once they are older than MODELSYNC_GC_TMP_MAX_AGE', async () => {
    const { dest } = await syncedModel();
    await scribble(dest);
    expect((await sync()).code).toBe(0);
    expect(await quarantined()).toHaveLength(1);
    const young = await runCli(['gc'], sb.env());
    expect(young.code).toBe(0);
    expect(await quarantined()).toHaveLength(1);
    const old = await runCli(['gc'], sb.env({ MODELSYNC_GC_TMP_MAX_AGE: '0' }));
    expect(old.code).toBe(0);
    expect(old.stdout).toMatch(/removed +quarantine\/sha256-/);
    expect(await quarantined()).toEqual([]);
  });

  it('a state DB from before ctime was recorded keeps warm starts warm (unchanged files carry over); a changed one does not', async () => {
    const { m, dest } = await syncedModel();
    const other = addModel(hub, 120_000);
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/m.safetensors' },
      { source: other.uri, dest: 'loras/o.safetensors' },
    ]);
    expect((await sync()).code).toBe(0);
    // What an older modelsync left: no ctime column, no schema version.
    const db = new Database(path.join(sb.state, 'state.db'));
    db.exec('ALTER TABLE verified DROP COLUMN ctime_ns');
    db.pragma('user_version = 0');
    db.close();
    hub.resetStats();
    const warm = await runCli(['sync'], sb.env());
    expect(warm.code).toBe(0);
    expect(warm.stdout).toMatch(/2 entries: 2 present/);
    expect(hub.stats.requests).toEqual([]);

    const db2 = new Database(path.join(sb.state, 'state.db'));
    db2.exec('ALTER TABLE verified DROP COLUMN ctime_ns');
    db2.pragma('user_version = 0');
    db2.close();
    await scribble(dest);
    const r = await sync();
    expect(r.code).toBe(0);
    expect(await fileSha256(dest)).toBe(m.sha256);
  });
});
