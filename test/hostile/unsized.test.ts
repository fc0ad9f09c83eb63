/**
 * Issue 13, class 9: unknown sizes are bounded. A source with no size anywhere (no manifest
 * `size`, no Content-Length, no Content-Range total) is capped at MODELSYNC_MAX_UNSIZED and
 * never takes its volume under 5 % free; a size only the server states (Content-Length,
 * Content-Range total) must fit the same room before a byte is written. Each fails with one
 * clear line (E_TOO_LARGE past the cap, E_NO_SPACE past the free space) and leaves no partial;
 * the volume is never filled.
 *
 * The endless streams are paced, and the models dir sits on a small tmpfs where this machine
 * allows the mount: code without the bound then meets ENOSPC on a few MiB, never fills the
 * machine's disk.
 */
import { mkdir, mkdtemp, readdir, rm, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { makeSafetensors } from '../support/hub.js';
import { exists, fileSha256, sha256 } from '../support/models.js';
import { mountTmpfs, unmount } from '../support/tmpfs.js';

const MiB = 1024 * 1024;
const model = makeSafetensors(300_000, 909);
const small = makeSafetensors(20_000, 910);
const twoMiB = makeSafetensors(2 * MiB, 911);

async function probeMount(): Promise<string | undefined> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-mount-probe-'));
  const r = await mountTmpfs(dir, MiB);
  if (r.ok) await unmount(dir);
  await rm(dir, { recursive: true, force: true });
  return r.ok ? undefined : r.reason;
}
const mountRefused = await probeMount();
if (mountRefused !== undefined) console.warn(`unsized.test: tmpfs mount refused (${mountRefused}); the free-space case is skipped`);

let web: ByteServer;
let sb: Sandbox;
let vol: string | undefined;

beforeAll(async () => {
  web = await startByteServer({
    files: { '/endless.safetensors': model, '/huge-length': model, '/huge-total': model, '/small.safetensors': small, '/two-mib.safetensors': twoMiB },
    faults: {
      // No Content-Length, no ranges, and after the real bytes garbage that never ends.
      '/endless.safetensors': { ignoreRange: true, endlessBody: true, bytesPerSecond: 4 * MiB },
      // Says it is a terabyte; would send its 300 KB and then keep the client waiting.
      '/huge-length': { ignoreRange: true, contentLengthDelta: 2 ** 40 },
      // Serves ranges, and says in every Content-Range that the file is a terabyte.
      '/huge-total': { contentRange: `bytes 0-0/${2 ** 40}` },
    },
  });
});
afterAll(async () => {
  await web.close();
});
afterEach(async () => {
  if (vol !== undefined) await unmount(vol);
  vol = undefined;
  await sb?.cleanup();
});

interface Report {
  entries: { state: string; error?: { code: string; message: string } }[];
}

async function syncIn(models: string | undefined, entries: Record<string, unknown>[], env: Record<string, string> = {}): Promise<{ r: CliResult; report: Report; models: string }> {
  await sb.writeManifest(entries);
  const dir = models ?? sb.models;
  const r = await runCli(['sync', '--json', '--models-dir', dir], sb.env(env), { timeoutMs: 40_000 });
  expect(r.signal, 'killed by the test timeout: the stream was never stopped').toBeNull();
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stdout + r.stderr).not.toContain('internal error');
  return { r, report: JSON.parse(r.stdout) as Report, models: dir };
}

async function tmpLeft(models: string): Promise<string[]> {
  return readdir(path.join(models, '.modelsync-store', 'tmp')).catch(() => []);
}

const entry = (p: string, dest = 'checkpoints/u.safetensors'): Record<string, unknown> => ({ source: `${web.url}${p}`, dest, sha256: sha256(model) });

describe('unknown sizes are bounded (issue 13, class 9)', () => {
  it('a stream with no size anywhere that never ends stops at MODELSYNC_MAX_UNSIZED: one clear line, no partial', async () => {
    sb = await sandbox();
    const before = web.bytesServed;
    const { r, report, models } = await syncIn(undefined, [entry('/endless.safetensors')], { MODELSYNC_MAX_UNSIZED: '1M', MODELSYNC_RETRY_ATTEMPTS: '2' });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_TOO_LARGE');
    expect(report.entries[0]?.error?.message).toMatch(/gives no size, and its stream ran past MODELSYNC_MAX_UNSIZED \(1\.0 MiB\)/);
    expect(await tmpLeft(models)).toEqual([]);
    expect(await exists(path.join(models, 'checkpoints/u.safetensors'))).toBe(false);
    // Not retried: a permanent verdict. The probe and one stream, each cut at about the cap.
    expect(web.bytesServed - before).toBeLessThan(4 * MiB);
  });

  it('a Content-Length beyond the room is refused before a byte is written', async () => {
    sb = await sandbox();
    const { r, report, models } = await syncIn(undefined, [entry('/huge-length')], { MODELSYNC_MAX_UNSIZED: '1M', MODELSYNC_RETRY_ATTEMPTS: '2' });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_TOO_LARGE');
    expect(report.entries[0]?.error?.message).toMatch(/says it is 1\.0 TiB, more than/);
    expect(await tmpLeft(models)).toEqual([]);
  });

  it('a Content-Range total beyond the room is refused before the partial is made', async () => {
    sb = await sandbox();
    const { r, report, models } = await syncIn(undefined, [entry('/huge-total')], { MODELSYNC_MAX_UNSIZED: '1M', MODELSYNC_RETRY_ATTEMPTS: '2' });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_TOO_LARGE');
    expect(await tmpLeft(models)).toEqual([]);
  });

  it('an entry without a size from a server that states one that fits downloads as before', async () => {
    sb = await sandbox();
    const { r } = await syncIn(undefined, [{ source: `${web.url}/small.safetensors`, dest: 'checkpoints/s.safetensors', sha256: sha256(small) }], { MODELSYNC_MAX_UNSIZED: '1M' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/s.safetensors'))).toBe(sha256(small));
  });

  it.skipIf(mountRefused !== undefined)('on a small volume an endless stream stops before the disk is full (5 % stays free), and the rest of the sync goes on', async () => {
    sb = await sandbox();
    vol = path.join(sb.dir, 'vol');
    const m = await mountTmpfs(vol, 4 * MiB);
    if (!m.ok) throw new Error(m.reason);
    const models = path.join(vol, 'models');
    await mkdir(models);
    const { r, report } = await syncIn(models, [entry('/endless.safetensors'), { source: `${web.url}/small.safetensors`, dest: 'checkpoints/s.safetensors', sha256: sha256(small), size: small.length }]);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_NO_SPACE');
    expect(report.entries[0]?.error?.message).toMatch(/keep its volume 5 % free/);
    expect(report.entries[1]?.state).toBe('published');
    expect(await fileSha256(path.join(models, 'checkpoints/s.safetensors'))).toBe(sha256(small));
    expect(await tmpLeft(models)).toEqual([]);
    const fs = await statfs(vol);
    expect(fs.bavail).toBeGreaterThan(fs.blocks / 20);
  });

  it.skipIf(mountRefused !== undefined)('a size the server states that the volume cannot hold is refused before the first byte, not met as a full disk halfway', async () => {
    sb = await sandbox();
    vol = path.join(sb.dir, 'vol');
    const m = await mountTmpfs(vol, MiB);
    if (!m.ok) throw new Error(m.reason);
    const models = path.join(vol, 'models');
    await mkdir(models);
    const before = web.bytesServed;
    const { r, report } = await syncIn(models, [{ source: `${web.url}/two-mib.safetensors`, dest: 'checkpoints/t.safetensors', sha256: sha256(twoMiB) }]);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_NO_SPACE');
    expect(report.entries[0]?.error?.message).toMatch(/says it is 2\.0 MiB, more than the .* that keep its volume 5 % free/);
    expect(await tmpLeft(models)).toEqual([]);
    // The one-byte probe, and nothing of the body.
    expect(web.bytesServed - before).toBeLessThan(64 * 1024);
  });

  it('lock: hashing an endless stream with no size stops at the cap', async () => {
    sb = await sandbox();
    await sb.writeManifest([{ source: `${web.url}/endless.safetensors`, dest: 'checkpoints/u.safetensors' }]);
    const r = await runCli(['lock'], sb.env({ MODELSYNC_MAX_UNSIZED: '1M', MODELSYNC_RETRY_ATTEMPTS: '2' }), { timeoutMs: 40_000 });
    expect(r.signal).toBeNull();
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/MODELSYNC_MAX_UNSIZED/);
  });
});
