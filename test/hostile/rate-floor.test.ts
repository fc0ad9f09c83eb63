/**
 * Issue 13, class 8: every transfer has a deadline in rate as well as in idleness. A server that
 * trickles (a byte a second never trips the idle timeout) is cut off by the minimum rate over a
 * window, with the host named; an entry whose size is known must be done within the time its
 * bytes take at that rate; a peer that holds a lease longer than that is taken over; and the
 * Hub's metadata calls are held to the same rule. Slow but real links pass with the defaults
 * (network-faults.test.ts: 400 KB/s; lease.test.ts: heartbeats).
 */
import { mkdir, open, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { freePort, killAll, readRecord, startRun, STUB } from '../support/daemon-harness.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { makeSafetensors, startHub, type BlobFaults, type Hub } from '../support/hub.js';
import { addModel, exists, fileSha256, sha256 } from '../support/models.js';

/** One-second windows keep the tests short; the rule is the same at the default 60 s. */
const FAST = { MODELSYNC_MIN_RATE_WINDOW: '1', MODELSYNC_RETRY_ATTEMPTS: '2' };
const model = makeSafetensors(20_000, 4242);

let hub: Hub;
let bytes: ByteServer;
let sb: Sandbox;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  bytes = await startByteServer({
    files: { '/trickle.safetensors': model, '/again.safetensors': model },
    faults: {
      '/trickle.safetensors': { bytesPerSecond: 2 },
      // Fast enough for every window, but always one byte short and without ranges: it starts over for ever.
      '/again.safetensors': { bytesPerSecond: 16 * 1024, ignoreRange: true, truncateBy: 1 },
    },
  });
});
afterAll(async () => {
  await Promise.all([hub.close(), bytes.close()]);
});
afterEach(async () => {
  await killAll();
  hub.clearFaults();
  hub.apiBytesPerSecond = undefined;
  await sb?.cleanup();
});

interface Report {
  entries: { state: string; error?: { code: string; message: string } }[];
}

async function sync(entries: Record<string, unknown>[], env: Record<string, string>, args: string[] = []): Promise<{ r: CliResult; report: Report }> {
  sb = await sandbox(hub.endpoint);
  await sb.writeManifest(entries);
  hub.resetStats();
  const r = await runCli(['sync', '--json', ...args], sb.env(env), { timeoutMs: 40_000 });
  expect(r.signal, 'killed by the test timeout: the transfer was never cut off').toBeNull();
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stdout + r.stderr).not.toContain('internal error');
  return { r, report: JSON.parse(r.stdout) as Report };
}

function hubEntry(faults: BlobFaults, size = 200_000): { entry: Record<string, unknown>; sha: string } {
  const m = addModel(hub, size);
  hub.setFaults(m.sha256, faults);
  return { entry: { source: m.uri, dest: 'checkpoints/t.safetensors' }, sha: m.sha256 };
}

describe('every transfer has a deadline in rate (issue 13, class 8)', () => {
  it('a CDN trickling a byte a second is cut off by the minimum rate, naming the host', async () => {
    const { entry } = hubEntry({ bytesPerSecond: 1 });
    const { r, report } = await sync([entry], FAST);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_TOO_SLOW');
    expect(report.entries[0]?.error?.message).toMatch(/127\.0\.0\.2:\d+ sent .* below the minimum rate of 4\.0 KiB\/s/);
    expect(await exists(path.join(sb.models, 'checkpoints/t.safetensors'))).toBe(false);
  });

  it('an https source trickling two bytes a second is cut off too; --min-rate sets the floor', async () => {
    const { r, report } = await sync([{ source: `${bytes.url}/trickle.safetensors`, dest: 'checkpoints/t.safetensors', sha256: sha256(model) }], FAST, ['--min-rate', '1K']);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_TOO_SLOW');
    expect(report.entries[0]?.error?.message).toMatch(/127\.0\.0\.1:\d+ sent .* below the minimum rate of 1\.0 KiB\/s/);
  });

  it('a trickle cut by the rate floor is no progress: retries end after the attempts, though bytes were kept', async () => {
    // 40 bytes a second keeps a few bytes per window; the attempt counter must not reset on them.
    const { entry } = hubEntry({ bytesPerSecond: 40 });
    const { r, report } = await sync([entry], { ...FAST, MODELSYNC_RETRY_ATTEMPTS: '3' });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_TOO_SLOW');
    expect(report.entries[0]?.error?.message).toMatch(/gave up after 3 attempts/);
  });

  it('a rate of 0 turns the floor off: a body the floor would cut completes (the idle timeout still applies)', async () => {
    const { entry, sha } = hubEntry({ bytesPerSecond: 2000 }, 5000);
    const { r } = await sync([entry], { ...FAST, MODELSYNC_MIN_RATE: '0' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/t.safetensors'))).toBe(sha);
    hub.setFaults(sha, { bytesPerSecond: 2000 });
    await sb.cleanup();
    const floored = await sync([entry], FAST);
    expect(floored.report.entries[0]?.error?.code).toBe('E_TOO_SLOW');
  });

  it('the per-entry ceiling ends a source that keeps starting over at an acceptable rate', async () => {
    // 16 KiB/s passes every window of the 8 KiB/s floor; each copy is thrown away (one byte short,
    // no ranges), and neither the attempts nor the byte budget may end it here: the ceiling does,
    // after one window plus 20 KB at 8 KiB/s of transfer time.
    const { r, report } = await sync([{ source: `${bytes.url}/again.safetensors`, dest: 'checkpoints/a.safetensors', sha256: sha256(model), size: model.length }], {
      ...FAST,
      MODELSYNC_MIN_RATE: '8K',
      MODELSYNC_RETRY_ATTEMPTS: '1000',
      MODELSYNC_FETCH_BUDGET: '1000',
    });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_TOO_SLOW');
    expect(report.entries[0]?.error?.message).toMatch(/not done after 3 s of transfer.*last from http:\/\/127\.0\.0\.1:\d+/);
  });

  it("the Hub's metadata API trickling is cut off by the same floor", async () => {
    const m = addModel(hub, 20_000);
    hub.apiBytesPerSecond = 20;
    const { r, report } = await sync([{ source: m.uri, dest: 'checkpoints/t.safetensors' }], FAST);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_TOO_SLOW');
    expect(report.entries[0]?.error?.message).toMatch(/127\.0\.0\.1:\d+ sent/);
  });

  it('lock: hashing a trickling source is cut off too', async () => {
    sb = await sandbox();
    await sb.writeManifest([{ source: `${bytes.url}/trickle.safetensors`, dest: 'checkpoints/t.safetensors' }]);
    const r = await runCli(['lock'], sb.env(FAST), { timeoutMs: 40_000 });
    expect(r.signal).toBeNull();
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/below the minimum rate/);
  });

  it('run: a required model from a trickling CDN fails the start clearly instead of never starting ComfyUI', async () => {
    sb = await sandbox(hub.endpoint);
    const { entry } = hubEntry({ bytesPerSecond: 1 });
    await sb.writeManifest([entry]);
    const port = await freePort();
    const record = path.join(sb.dir, 'stub.json');
    const d = startRun(['--', process.execPath, STUB, '--listen', '127.0.0.1', '--port', String(port), '--stub-record', record], sb.env(FAST), await freePort(), [record]);
    const exit = await d.exited;
    expect(exit.code).toBe(1);
    expect(d.stderr()).toMatch(/not starting: 1 required model could not be had/);
    expect(d.stderr()).toMatch(/below the minimum rate/);
    expect(await readRecord(record)).toBeUndefined();
  });

  it('a peer that heartbeats its lease but never commits is taken over once it held it longer than a download may take', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 1_500_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/t.safetensors' }]);
    // A live holder on another node: its owner record changes every 100 ms, forever. It writes
    // through its own directory (an fd of it: once its lease is moved away, its beats go with it
    // and never land in the lease of whoever took over).
    const lease = path.join(sb.models, '.modelsync-store', 'leases', `sha256-${m.sha256}`);
    await mkdir(lease, { recursive: true });
    const dir = await open(lease, 'r');
    const owner = `/proc/self/fd/${dir.fd}/owner`;
    let beat = 0;
    const beatOnce = (): Promise<void> => writeFile(owner, JSON.stringify({ token: 'stuck-peer', beat: ++beat, host: 'elsewhere' })).catch(() => undefined);
    await beatOnce();
    const heart = setInterval(() => void beatOnce(), 100);
    try {
      // Ceiling: 1 s + 1.5 MB at 4 MiB/s, under 1.4 s; patience twice that plus the 500 ms stale time.
      const r = await runCli(['sync'], sb.env({ ...FAST, MODELSYNC_MIN_RATE: '4M', MODELSYNC_LEASE_STALE_MS: '500' }), { timeoutMs: 40_000 });
      expect(r.signal, `killed by the test timeout: it waited on the peer for ever\n${r.stderr}`).toBeNull();
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stderr).toMatch(/longer than its download may take; taking it over/);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/t.safetensors'))).toBe(m.sha256);
    } finally {
      clearInterval(heart);
      await dir.close();
    }
    expect(await readdir(path.join(sb.models, '.modelsync-store/tmp'))).toEqual([]);
  });

  it('a bad --min-rate is bad usage (exit 2)', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    const r = await runCli(['sync', '--min-rate', 'fast'], sb.env());
    expect(r.code).toBe(2);
    expect(r.stderr + r.stdout).toMatch(/--min-rate/);
  });
});
