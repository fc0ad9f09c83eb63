/**
 * hostile-world.md: "low `ulimit -v` / `-n`, read-only dirs, YAML alias bombs -> one clear line
 * and a documented exit code, never internal error" (issue 13, class 12). Each limit is real:
 * the CLI runs under `sh -c 'ulimit ...; exec node ...'`, read-only folders are read-only mounts
 * (this sandbox runs as root, which ignores permission bits), and the hostile files are files.
 */
import { spawn } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { processLimits } from '../../src/os-limits.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { BIN, leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { freePort, killAll, startRun, waitFor } from '../support/daemon-harness.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { exists, fileSha256, sha256 } from '../support/models.js';
import { mountTmpfs, unmount } from '../support/tmpfs.js';

const MiB = 1024 * 1024;
/** Several chunks (4 MiB each): the multi-chunk path, where the hash thread works. */
const BIG = Buffer.alloc(12 * MiB);
for (let i = 0; i < BIG.length; i += 4) BIG.writeUInt32LE((i * 2654435761) >>> 0, i);
const SMALL = Array.from({ length: 240 }, (_, i) => Buffer.from(`small model ${i}\n`.repeat(2000 + i)));

let web: ByteServer;
let sb: Sandbox;
const mounts: string[] = [];

beforeAll(async () => {
  const files: Record<string, Buffer> = { '/big.gguf': BIG };
  SMALL.forEach((b, i) => (files[`/s${i}.gguf`] = b));
  web = await startByteServer({ files });
});
afterAll(async () => {
  await web.close();
});
afterEach(async () => {
  await killAll();
  for (const m of mounts.splice(0).reverse()) await unmount(m);
  web.requests.length = 0;
  await sb?.cleanup();
});

async function probeMount(): Promise<string | undefined> {
  const s = await sandbox();
  const r = await mountTmpfs(path.join(s.dir, 'probe'), MiB);
  if (r.ok) await unmount(path.join(s.dir, 'probe'));
  await s.cleanup();
  return r.ok ? undefined : r.reason;
}
const mountRefused = await probeMount();
if (mountRefused !== undefined) console.warn(`limits.test: mount refused (${mountRefused}); the read-only folder cases are skipped`);

/**
 * KiB of address space this Node maps before running any code (VmSize of a bare `node -e`):
 * 711 MiB on Node 20, 1245 MiB on Node 24 (a bigger code range and pointer cage). The limits
 * below are set relative to it, so each case means the same on every Node CI runs.
 */
const nodeBaseKiB = await new Promise<number>((resolve, reject) => {
  const child = spawn(process.execPath, ['-e', 'process.stdout.write(/VmSize:\\s+(\\d+)/.exec(require("fs").readFileSync("/proc/self/status","utf8"))[1])'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.on('error', reject);
  child.on('close', () => (/^\d+$/.test(out) ? resolve(Number(out)) : reject(new Error(`no VmSize from node -e: ${out}`))));
});
const KiBperMiB = 1024;

/** `modelsync ARGS` under a shell's `ulimit` (applied to the node process itself, by exec). */
function underUlimit(limit: string, args: readonly string[], env: Record<string, string>, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const quoted = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
    const child = spawn('/bin/sh', ['-c', `ulimit ${limit} && exec ${quoted}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** One `modelsync: ...` line naming the cause; no stack, no "internal error", no secret. */
function oneClearLine(r: CliResult, pattern: RegExp): void {
  expect(r.signal).toBeNull();
  expect(r.stderr).not.toMatch(/internal error|unexpected error|FATAL ERROR|Fatal process/);
  expect(r.stderr).not.toMatch(/\n\s+at .*:\d+:\d+/);
  expect(`${r.stdout}\n${r.stderr}`.split('\n').filter((l) => pattern.test(l))).toHaveLength(1);
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
}

const bigEntry = (): Record<string, unknown> => ({ source: `${web.url}/big.gguf`, dest: 'checkpoints/big.gguf', sha256: sha256(BIG) });

describe('process limits (issue 13, class 12)', () => {
  it('`ulimit -v` too low for a hash thread: a multi-chunk file is hashed on the main thread, verified, exit 0', async () => {
    sb = await sandbox();
    await sb.writeManifest([bigEntry()]);
    // Node and a sync fit in 750 MiB beyond what Node maps at start; a default-sized worker isolate did not.
    const r = await underUlimit(`-v ${nodeBaseKiB + 750 * KiBperMiB}`, ['sync', '--chunk-size', '4M', '--connections', '4'], sb.env());
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(r.signal).toBeNull();
    expect(r.stdout).toMatch(/1 published/);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/big.gguf'))).toBe(sha256(BIG));
    expect((await checkFinalPaths(sb.models, { 'checkpoints/big.gguf': sha256(BIG) })).corrupt).toEqual([]);
  });

  it('`ulimit -v` too low for Node to work at all: one line naming the limit, exit 2, before anything is fetched', async () => {
    sb = await sandbox();
    await sb.writeManifest([bigEntry()]);
    for (const cmd of [['sync'], ['status'], ['plan']]) {
      // Enough for Node to load modelsync, less than the 384 MiB of headroom a sync needs.
      const r = await underUlimit(`-v ${nodeBaseKiB + 170 * KiBperMiB}`, cmd, sb.env());
      expect(r.code, cmd.join(' ')).toBe(2);
      oneClearLine(r, /^modelsync: the address-space limit \(`ulimit -v`\) is \d+ MiB, .*raise it to \d+ MiB or more/);
    }
    expect(web.requests).toEqual([]);
  });

  it('`ulimit -n 64`: one line naming the open-file limit, exit 2, for sync, status and run', async () => {
    sb = await sandbox();
    await sb.writeManifest([bigEntry()]);
    for (const cmd of [['sync'], ['status'], ['run', '--control', `127.0.0.1:${await freePort()}`]]) {
      const r = await underUlimit('-n 64', cmd, sb.env());
      expect(r.code, cmd.join(' ')).toBe(2);
      oneClearLine(r, /^modelsync: the open-file limit is 64; modelsync needs at least 256/);
    }
    expect(web.requests).toEqual([]);
  });

  it('an open-file limit that holds fewer connections than asked: the budget is cut (and said), every file arrives', async () => {
    sb = await sandbox();
    await sb.writeManifest(SMALL.map((b, i) => ({ source: `${web.url}/s${i}.gguf`, dest: `checkpoints/s${i}.gguf`, sha256: sha256(b) })));
    const r = await underUlimit('-n 256', ['sync', '--connections', '200'], sb.env());
    expect(r.code, r.stdout.slice(-2000)).toBe(0);
    expect(r.stdout).toMatch(/240 entries: 0 present, 240 published, 0 failed/);
    expect(r.stderr).toMatch(/fewer connections than asked/);
    expect(r.stderr).not.toMatch(/EMFILE|internal error/);
    expect(processLimits().openFiles).toBeGreaterThan(256);
  });

  it.skipIf(mountRefused !== undefined)('a read-only models dir: one line naming EROFS (exit 1), with the store inside it or elsewhere, before any byte is fetched', async () => {
    sb = await sandbox();
    await sb.writeManifest([bigEntry()]);
    const r0 = await mountTmpfs(sb.models, 16 * MiB);
    if (!r0.ok) throw new Error(r0.reason);
    mounts.push(sb.models);
    await runMount(['-o', 'remount,ro', sb.models]);
    const inside = await runCli(['sync'], sb.env());
    expect(inside.code).toBe(1);
    oneClearLine(inside, /^modelsync: store .*\.modelsync-store is not writable: .*: read-only file system \(EROFS\)$/);
    const elsewhere = await runCli(['sync'], sb.env({ MODELSYNC_STORE_DIR: path.join(sb.dir, 'store') }));
    expect(elsewhere.code).toBe(1);
    oneClearLine(elsewhere, /^modelsync: models dir .* is not writable: .*: read-only file system \(EROFS\)$/);
    expect(web.requests).toEqual([]);
  });

  it.skipIf(mountRefused !== undefined)('a read-only store: one line naming EROFS, exit 1', async () => {
    sb = await sandbox();
    await sb.writeManifest([bigEntry()]);
    const store = path.join(sb.dir, 'store');
    const r0 = await mountTmpfs(store, 16 * MiB);
    if (!r0.ok) throw new Error(r0.reason);
    mounts.push(store);
    await runMount(['-o', 'remount,ro', store]);
    const r = await runCli(['sync'], sb.env({ MODELSYNC_STORE_DIR: store }));
    expect(r.code).toBe(1);
    oneClearLine(r, /^modelsync: store .* is not writable: .*: read-only file system \(EROFS\)$/);
  });

  it('paths past the file system\'s limit (ENAMETOOLONG): the entry fails in one line naming it, never an unexpected error', async () => {
    sb = await sandbox();
    await sb.writeManifest([bigEntry()]);
    // A models dir just short of PATH_MAX: its own paths work, the store's inside it do not. (Past
    // 3990: writes in the store go through its folders held open, whose paths are short.)
    let deep = sb.models;
    while (deep.length < 4040) deep = path.join(deep, 'd'.repeat(Math.min(200, 4040 - deep.length - 1)));
    await mkdir(deep, { recursive: true });
    const r = await runCli(['sync'], sb.env({ MODELSYNC_MODELS_DIR: deep }));
    expect(r.code).toBe(1);
    oneClearLine(r, /(file name too long|ENAMETOOLONG)/);
    expect(`${r.stdout}${r.stderr}`).toMatch(/\(ENAMETOOLONG\)/);
  });
});

describe('hostile manifests and workflows (issue 13, class 12)', () => {
  const bomb = (): string => {
    let y = 'version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n';
    for (let i = 1; i < 12; i++) y += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]\n`;
    return `${y}models: []\n`;
  };

  it('a YAML alias bomb is an invalid manifest (exit 2), never an internal error', async () => {
    sb = await sandbox();
    await writeFile(path.join(sb.dir, 'bomb.yaml'), bomb());
    const r = await runCli(['sync', '--manifest', path.join(sb.dir, 'bomb.yaml')], sb.env());
    expect(r.code).toBe(2);
    oneClearLine(r, /syntax: too many aliases/);
  });

  it('the daemon rejects a manifest edited into an alias bomb and keeps the last good one', async () => {
    sb = await sandbox();
    await sb.writeManifest([]);
    const d = startRun([], sb.env(), await freePort());
    await waitFor('the first sync', async () => (await d.get('/readyz'))?.status === 200);
    await writeFile(sb.manifest, bomb());
    // writeFile is not atomic: the watcher may read the file half-written first (a syntax
    // error), then again once it is whole.
    const st = await waitFor('the bad edit noticed', async () => {
      const s = await d.status();
      return /too many aliases/.test(s.manifest.error ?? '') ? s : undefined;
    });
    expect(st.manifest.error).toMatch(/too many aliases/);
    expect((await d.get('/healthz'))?.status).toBe(200);
    expect(d.stderr()).not.toMatch(/unexpected error|a bug/);
  });

  it('a manifest or lock file past 16 MiB, or one that never ends (/dev/zero), is refused without being read whole (exit 2)', async () => {
    sb = await sandbox();
    const huge = path.join(sb.dir, 'huge.yaml');
    await writeFile(huge, `version: 1\nmodels: []\n#${' '.repeat(17 * MiB)}\n`);
    for (const m of [huge, '/dev/zero']) {
      const r = await runCli(['sync', '--manifest', m], sb.env());
      expect(r.code, m).toBe(2);
      oneClearLine(r, /is larger than 16 MiB; refusing to parse it/);
    }
    await sb.writeManifest([]);
    await writeFile(path.join(sb.dir, 'manifest.lock.json'), Buffer.alloc(17 * MiB, 0x20));
    const lock = await runCli(['sync'], sb.env());
    expect(lock.code).toBe(2);
    oneClearLine(lock, /lock file .* is larger than 16 MiB/);
  });

  it('a manifest nested thousands deep is an invalid manifest (exit 2)', async () => {
    sb = await sandbox();
    for (const [name, text] of [
      ['deep.json', `{"version": 1, "models": [], "x": ${'['.repeat(50_000)}${']'.repeat(50_000)}}`],
      ['deep.yaml', `version: 1\nmodels: []\nx: ${'['.repeat(50_000)}${']'.repeat(50_000)}\n`],
      ['deep-entry.json', `{"version": 1, "models": [{"source": ${'['.repeat(600)}${']'.repeat(600)}, "dest": "checkpoints/a.gguf"}]}`],
    ] as const) {
      await writeFile(path.join(sb.dir, name), text);
      const r = await runCli(['sync', '--manifest', path.join(sb.dir, name)], sb.env());
      expect(r.code, name).toBe(2);
      expect(r.stderr, name).toMatch(/^modelsync: invalid manifest /m);
      expect(r.stderr).not.toMatch(/internal error/);
    }
  });

  it('import-workflow: a workflow that never ends or whose subgraphs nest too deep is one line, exit 2', async () => {
    sb = await sandbox();
    const endless = await runCli(['import-workflow', '/dev/zero'], sb.env());
    expect(endless.code).toBe(2);
    oneClearLine(endless, /cannot read workflow \/dev\/zero: larger than 64 MiB/);
    let wf = '{"nodes": [], "models": []}';
    for (let i = 0; i < 20_000; i++) wf = `{"definitions": {"subgraphs": [${wf}]}}`;
    const file = path.join(sb.dir, 'deep-workflow.json');
    await writeFile(file, wf);
    const deep = await runCli(['import-workflow', file], sb.env());
    expect(deep.code).toBe(2);
    oneClearLine(deep, /cannot read workflow .*(nested too deeply|Maximum call stack)/);
    await rm(file);
    expect(await readdir(sb.dir)).not.toContain('manifest.yaml');
    expect(await exists(path.join(sb.models, 'checkpoints'))).toBe(false);
  });
});

async function runMount(args: string[]): Promise<void> {
  const { execFile } = await import('node:child_process');
  await new Promise<void>((resolve, reject) => execFile('mount', args, (e) => (e ? reject(e) : resolve())));
}
