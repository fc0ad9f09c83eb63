import { spawn } from 'node:child_process';
import { readdir, readFile, truncate, open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, runCli, type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256, type TestModel } from './support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;


const SIZE = 3 * 1024 * 1024;
const FLAGS = ['--chunk-size', '128K', '--connections', '4'];
/**
 * The killed run's lease is left behind. Its holder died on this machine, so the rerun breaks it
 * at once: the default stale period (60 s) must not be waited out, and the test timeout says so.
 */
const AFTER_KILL = {};

function tmpDir(): string {
  return path.join(sb.models, '.modelsync-store', 'tmp');
}

async function journalBytes(): Promise<number> {
  let best = 0;
  for (const n of await readdir(tmpDir()).catch(() => [] as string[])) {
    if (!n.endsWith('.journal')) continue;
    try {
      // What a rerun on this boot resumes from: the page-cache progress when recorded, else the fdatasync'ed one.
      const j = JSON.parse(await readFile(path.join(tmpDir(), n), 'utf8')) as { written: number[]; cached?: number[] };
      const trusted = j.cached?.length === j.written.length ? j.cached : j.written;
      best = Math.max(best, trusted.reduce((a, b) => a + b, 0));
    } catch {
      /* being replaced */
    }
  }
  return best;
}

/** Start a sync against a slow CDN and SIGKILL it once the journal records `atLeast` bytes. */
async function killMidway(m: TestModel, atLeast: number): Promise<number> {
  // ~5 s at 4 x 150 KB/s: the kill lands mid-download with seconds to spare, even on a loaded machine.
  hub.setFaults(m.sha256, { bytesPerSecond: 150_000 });
  const child = spawn(process.execPath, [BIN, 'sync', ...FLAGS], { env: sb.env(), stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  for (let i = 0; i < 400; i++) {
    if ((await journalBytes()) >= atLeast) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill('SIGKILL');
  await exited;
  hub.clearFaults();
  const had = await journalBytes();
  expect(had).toBeLessThan(m.content.length);
  return had;
}

async function setup(): Promise<TestModel> {
  sb = await sandbox(hub.endpoint);
  const m = addModel(hub, SIZE);
  await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/r.safetensors' }]);
  hub.resetStats();
  return m;
}

describe('ranged multi-connection downloads and resume', () => {
  it('reassembles chunks fetched over several connections exactly', async () => {
    const m = await setup();
    const r = await runCli(['sync', ...FLAGS], sb.env());
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(m.sha256);
    const ranges = hub.stats.requests.filter((q) => q.host === 'cdn').map((q) => q.range);
    // 3 MiB + header in 128 KiB chunks: 25 ranged requests, each byte asked for once.
    expect(ranges).toHaveLength(Math.ceil(m.content.length / (128 * 1024)));
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length);
  });

  it('a cut in the middle of one chunk is resumed while the others continue', async () => {
    const m = await setup();
    hub.setFaults(m.sha256, { cutAfterBytes: { bytes: 50_000, times: 1 } });
    const r = await runCli(['sync', ...FLAGS], sb.env());
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(m.sha256);
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length);
    expect(hub.stats.requests.some((q) => q.host === 'cdn' && q.range !== undefined && /^bytes=\d*50000-/.test(q.range))).toBe(true);
  });

  it('resumes after SIGKILL from the journaled bytes', async () => {
    const m = await setup();
    const had = await killMidway(m, SIZE * 0.3);
    expect(had).toBeGreaterThan(0);
    hub.resetStats();
    const r = await runCli(['sync', ...FLAGS], sb.env(AFTER_KILL));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/resuming partial download/);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(m.sha256);
    // Exactly the bytes the journal did not vouch for were fetched again.
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length - had);
    expect(await readdir(tmpDir())).toEqual([]);
  });

  it('a journal temp that a writer killed mid-write left behind is cleared by the sync that takes over', async () => {
    const m = await setup();
    await killMidway(m, SIZE * 0.3);
    const journal = (await readdir(tmpDir())).find((n) => n.endsWith('.journal'));
    expect(journal).toBeDefined();
    await writeFile(path.join(tmpDir(), `${journal}.999999.killed.tmp`), '{"v":1');
    const r = await runCli(['sync', ...FLAGS], sb.env(AFTER_KILL));
    expect(r.code).toBe(0);
    expect(await readdir(tmpDir())).toEqual([]);
  });

  it('a rerun with another --chunk-size resumes in the chunks the partial was started with', async () => {
    const m = await setup();
    const had = await killMidway(m, SIZE * 0.3);
    hub.resetStats();
    const r = await runCli(['sync', '--chunk-size', '1M', '--connections', '4'], sb.env(AFTER_KILL));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/resuming partial download/);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(m.sha256);
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length - had);
    // Still the first run's 128 KiB ranges, not 1 MiB ones.
    const spans = hub.stats.requests.filter((q) => q.host === 'cdn').map((q) => /^bytes=(\d+)-(\d+)$/.exec(q.range ?? ''));
    expect(spans.every((x) => x !== null && Number(x[2]) - Number(x[1]) < 128 * 1024)).toBe(true);
  });

  it('a journal whose chunk size is below the smallest --chunk-size is not trusted: clean restart', async () => {
    const m = await setup();
    await killMidway(m, SIZE * 0.3);
    for (const n of await readdir(tmpDir())) {
      if (!n.endsWith('.journal')) continue;
      const j = JSON.parse(await readFile(path.join(tmpDir(), n), 'utf8')) as Record<string, unknown>;
      await writeFile(path.join(tmpDir(), n), JSON.stringify({ ...j, chunkSize: 1 }));
    }
    hub.resetStats();
    const r = await runCli(['sync', ...FLAGS], sb.env(AFTER_KILL));
    expect(r.code).toBe(0);
    expect(r.stderr).not.toMatch(/resuming partial download/);
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(m.sha256);
  });

  it('by default a file comes in chunks of size / 64, at least 4 MiB, at most --chunk-size', async () => {
    sb = await sandbox(hub.endpoint);
    const mid = addModel(hub, 9 * 1024 * 1024);
    await sb.writeManifest([{ source: mid.uri, dest: 'checkpoints/mid.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/mid.safetensors'))).toBe(mid.sha256);
    // 9 MiB + header: 4 MiB, 4 MiB and the rest, where 32 MiB chunks would have been one request.
    // Requests that start inside a chunk are the backs of pieces split off for idle connections
    // (work stealing, chunks.ts): the chunks themselves are the ones that start at a boundary.
    const ranges = hub.stats.requests.filter((q) => q.host === 'cdn' && q.method === 'GET').map((q) => q.range ?? '');
    const atBoundary = ranges.filter((r) => Number(/^bytes=(\d+)-/.exec(r)?.[1]) % (4 * 1024 * 1024) === 0);
    expect(atBoundary.sort()).toEqual(['bytes=0-4194303', `bytes=4194304-8388607`, `bytes=8388608-${mid.content.length - 1}`].sort());
  });

  it('a partial truncated behind the journal is not trusted: clean restart', async () => {
    const m = await setup();
    await killMidway(m, SIZE * 0.3);
    for (const n of await readdir(tmpDir())) if (n.endsWith('.part')) await truncate(path.join(tmpDir(), n), 1000);
    const r = await runCli(['sync', ...FLAGS], sb.env(AFTER_KILL));
    expect(r.code).toBe(0);
    expect(r.stderr).not.toMatch(/resuming partial download/);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(m.sha256);
  });

  it('a partial whose bytes were damaged behind the journal fails the hash and is re-fetched clean', async () => {
    const m = await setup();
    await killMidway(m, SIZE * 0.3);
    for (const n of await readdir(tmpDir())) {
      if (!n.endsWith('.part')) continue;
      const fh = await open(path.join(tmpDir(), n), 'r+');
      await fh.write(Buffer.alloc(4096, 0xee), 0, 4096, 20_000);
      await fh.close();
    }
    const r = await runCli(['sync', ...FLAGS], sb.env(AFTER_KILL));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/failed verification; discarding/);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(m.sha256);
  });

  it('a source that changed between runs restarts cleanly with the new content', async () => {
    const m = await setup();
    await killMidway(m, SIZE * 0.3);
    const v2 = addModel(hub, SIZE / 2);
    hub.pushFiles(m.repo, [{ path: m.path, content: v2.content }]);
    const r = await runCli(['sync', ...FLAGS], sb.env(AFTER_KILL));
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(v2.sha256);
  });
});
