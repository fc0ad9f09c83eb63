/**
 * hostile-world.md, the disk: ENOSPC halfway through a download and a plan that cannot fit.
 * The disk is really full: a size-limited tmpfs mounted for the test (this sandbox runs as root
 * and allows mount(2)); RLIMIT_FSIZE (`ulimit -f`, EFBIG) covers the same path on machines
 * that refuse the mount, and runs everywhere since it needs no privilege.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIN, leakedSecrets, runCli, type CliResult, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { freePort, killAll, startRun, waitFor } from '../support/daemon-harness.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { rawRequest } from '../support/http-get.js';
import { makeSafetensors } from '../support/hub.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { addModel, exists, fileSha256, sha256 } from '../support/models.js';
import { mountTmpfs, resizeTmpfs, unmount } from '../support/tmpfs.js';

const MiB = 1024 * 1024;
const FLAGS = ['--chunk-size', '256K', '--connections', '4'];

/** Can this machine mount a tmpfs? Decided once, at collection, so that skips are visible. */
async function probeMount(): Promise<string | undefined> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-mount-probe-'));
  const r = await mountTmpfs(dir, MiB);
  if (r.ok) await unmount(dir);
  await rm(dir, { recursive: true, force: true });
  return r.ok ? undefined : r.reason;
}
const mountRefused = await probeMount();
if (mountRefused !== undefined) console.warn(`disk.test: tmpfs mount refused (${mountRefused}); ENOSPC is covered by the RLIMIT_FSIZE test only`);

const { hub, sandbox } = await useHubSandbox();
let web: ByteServer;
let sb: Sandbox;
let vol: string | undefined;
const big = makeSafetensors(3 * MiB, 4242);
const bigSha = sha256(big);

beforeAll(async () => {
  // A paced copy: the disk-full cases fill the volume while it downloads.
  web = await startByteServer({ files: { '/big.safetensors': big, '/paced-big.safetensors': big }, faults: { '/paced-big.safetensors': { bytesPerSecond: 256 * 1024 } } });
});
afterAll(async () => {
  await web.close();
});
afterEach(async () => {
  if (vol !== undefined) await unmount(vol);
  vol = undefined;
  web.requests.length = 0;
});

/** A sandbox whose models dir (and so its store) lives on a tmpfs of `bytes`; state stays on disk. */
async function onSmallDisk(bytes: number): Promise<string> {
  sb = await sandbox(hub.endpoint);
  vol = path.join(sb.dir, 'vol');
  const r = await mountTmpfs(vol, bytes);
  if (!r.ok) throw new Error(`mount refused: ${r.reason}`);
  const models = path.join(vol, 'models');
  await mkdir(models);
  return models;
}

function storeTmp(models: string): string {
  return path.join(models, '.modelsync-store', 'tmp');
}

/**
 * Someone else fills the volume once our download is under way. (A size the server states that
 * cannot fit is refused before the first byte, so a full disk halfway is what a concurrent
 * writer does to a download that fit when it began.)
 */
async function fillOnceStarted(models: string): Promise<void> {
  await waitFor('the partial', async () => (await readdir(storeTmp(models)).catch(() => [])).some((f) => f.endsWith('.part')));
  const fs = await statfs(vol as string);
  await writeFile(path.join(vol as string, 'filler'), Buffer.alloc(fs.bavail * fs.bsize)).catch(() => undefined);
}

/** Each chunk asked for at most once: a permanent error must not turn into a retry loop. */
function expectNoRetryLoop(): void {
  // The first request is the size probe (the manifest gives no size); it asks for chunk 0 too.
  const ranges = web.requests.slice(1).map((q) => q.range ?? 'whole');
  expect(new Set(ranges).size).toBe(ranges.length);
  expect(ranges.length).toBeLessThanOrEqual(Math.ceil(big.length / (256 * 1024)) + 1);
}

function expectOneClearLine(r: CliResult): void {
  expect(r.stdout.split('\n').filter((l) => /disk full/.test(l))).toHaveLength(1);
  expect(r.stderr).not.toContain('internal error');
  expect(r.stderr).not.toMatch(/\n\s+at .*\.js:\d+/);
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
}

describe('disk full (hostile-world.md, the disk and the process)', () => {
  it.skipIf(mountRefused !== undefined)('ENOSPC halfway: fails fast and permanently, partial removed, nothing final; after freeing space the next sync works', async () => {
    // The plan and the room for the server's stated size let it start; then the disk fills.
    const models = await onSmallDisk(8 * MiB);
    await sb.writeManifest([{ source: `${web.url}/paced-big.safetensors`, dest: 'checkpoints/big.safetensors', sha256: bigSha }]);
    const env = sb.env({ MODELSYNC_MODELS_DIR: models });
    const running = runCli(['sync', ...FLAGS], env, { timeoutMs: 30_000 });
    await fillOnceStarted(models);
    const r = await running;
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/FAILED +checkpoints\/big\.safetensors: .*disk full while writing .*\(ENOSPC\)/);
    expectOneClearLine(r);
    expectNoRetryLoop();
    expect(await exists(path.join(models, 'checkpoints/big.safetensors'))).toBe(false);
    expect(await readdir(storeTmp(models))).toEqual([]);
    expect((await checkFinalPaths(models, { 'checkpoints/big.safetensors': bigSha })).corrupt).toEqual([]);

    await resizeTmpfs(vol as string, 16 * MiB);
    const again = await runCli(['sync', ...FLAGS], env);
    expect(again.code).toBe(0);
    expect(again.stderr).not.toMatch(/state DB was unreadable/);
    expect(await fileSha256(path.join(models, 'checkpoints/big.safetensors'))).toBe(bigSha);
    expect(await readdir(storeTmp(models))).toEqual([]);
  });

  it.skipIf(mountRefused !== undefined)('a plan that cannot fit is refused before any download, with needed vs free bytes', async () => {
    const models = await onSmallDisk(2 * MiB);
    const m = addModel(hub, 3 * MiB);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync', ...FLAGS], sb.env({ MODELSYNC_MODELS_DIR: models }));
    expect(r.code).toBe(1);
    const m2 = /modelsync: not enough free space: need ([\d.]+) MiB, have ([\d.]+) MiB free/.exec(r.stderr);
    expect(m2).not.toBeNull();
    expect(Number(m2?.[1])).toBeGreaterThan(Number(m2?.[2]));
    expect(hub.stats.requests.filter((q) => q.host === 'cdn')).toEqual([]);
    expect(await readdir(storeTmp(models))).toEqual([]);
    expect(await exists(path.join(models, 'checkpoints'))).toBe(false);
  });

  it.skipIf(mountRefused !== undefined)('the daemon stays up and healthy through a disk-full sync; a resync after freeing space succeeds', async () => {
    const models = await onSmallDisk(8 * MiB);
    // Optional: a required model the daemon cannot get stops it on purpose (test/daemon.test.ts).
    await sb.writeManifest([{ source: `${web.url}/paced-big.safetensors`, dest: 'checkpoints/big.safetensors', sha256: bigSha, required: false }]);
    const d = startRun([], sb.env({ MODELSYNC_MODELS_DIR: models }), await freePort());
    try {
      await fillOnceStarted(models);
      const failed = await waitFor('the disk-full sync', async () => {
        const st = await d.status().catch(() => undefined);
        return st?.sync.last !== undefined && !st.sync.running ? st : undefined;
      });
      expect(failed.sync.last?.ok).toBe(false);
      expect(failed.entries[0]?.error).toMatch(/disk full/);
      expect((await d.get('/healthz'))?.status).toBe(200);
      expect(await readdir(storeTmp(models))).toEqual([]);
      await resizeTmpfs(vol as string, 16 * MiB);
      const resync = await rawRequest(`${d.controlUrl}/resync`, { method: 'POST', timeoutMs: 30_000 });
      expect(resync.status, resync.body.toString()).toBe(200);
      expect(await fileSha256(path.join(models, 'checkpoints/big.safetensors'))).toBe(bigSha);
      expect(d.stderr()).not.toMatch(/state DB was unreadable|internal error/);
      expect(leakedSecrets(d.stdout(), d.stderr())).toEqual([]);
      d.signal('SIGTERM');
      expect((await d.exited).code).toBe(0);
    } finally {
      await killAll();
    }
  });

  it('a file-size limit (RLIMIT_FSIZE, EFBIG) is a full disk too: one clear line, no partial, no retry loop', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([{ source: `${web.url}/big.safetensors`, dest: 'checkpoints/big.safetensors', sha256: bigSha }]);
    // `ulimit -f` counts 1024-byte blocks: 1 MiB, a third of the file. Node ignores SIGXFSZ, so
    // the write fails with EFBIG instead of killing the process.
    const r = await runShell(`ulimit -f 1024; exec "${process.execPath}" "${BIN}" sync ${FLAGS.join(' ')}`, sb.env());
    expect(r.signal).toBeNull();
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/FAILED +checkpoints\/big\.safetensors: .*disk full .*\(EFBIG\)/);
    expectOneClearLine(r);
    expectNoRetryLoop();
    expect(await exists(path.join(sb.models, 'checkpoints/big.safetensors'))).toBe(false);
    expect(await readdir(storeTmp(sb.models))).toEqual([]);
    const again = await runCli(['sync', ...FLAGS], sb.env());
    expect(again.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/big.safetensors'))).toBe(bigSha);
  });
});

function runShell(script: string, env: Record<string, string>): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
