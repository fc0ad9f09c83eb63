/**
 * hostile-world.md, the network, below HTTP: a TCP fault proxy (test/support/fault-proxy.ts) in
 * front of a plain https-source server resets, stalls, truncates and slows connections. The same
 * faults injected by the Hub stand-in at the HTTP level are in test/network-faults.test.ts.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_SOURCE_TOKEN, leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { startFaultProxy, type FaultProxy, type ProxyMode } from '../support/fault-proxy.js';
import { makeSafetensors } from '../support/hub.js';
import { exists, fileSha256, sha256 } from '../support/models.js';

const CHUNK = 64 * 1024;
const model = makeSafetensors(600 * 1024, 61);
let web: ByteServer;
let proxy: FaultProxy;
let sb: Sandbox;

beforeAll(async () => {
  web = await startByteServer({ files: { '/m.safetensors': model } });
  proxy = await startFaultProxy({ host: web.host, port: web.port });
});
afterAll(async () => {
  await Promise.all([proxy.close(), web.close()]);
});
afterEach(async () => {
  proxy.mode = { kind: 'pass' };
  web.requests.length = 0;
  await sb?.cleanup();
});

const DEST = 'checkpoints/p.safetensors';

async function syncThrough(mode: ProxyMode, env: Record<string, string> = {}): Promise<CliResult> {
  sb = await sandbox();
  await sb.writeManifest([{ source: `${proxy.url}/m.safetensors`, dest: DEST, sha256: sha256(model), size: model.length }]);
  proxy.mode = mode;
  const r = await runCli(['sync', '--chunk-size', '64K', '--connections', '4'], sb.env({ MODELSYNC_HTTP_TOKENS: `127.0.0.1=${FAKE_SOURCE_TOKEN}`, ...env }));
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stderr).not.toContain('internal error');
  return r;
}

async function expectVerified(r: CliResult): Promise<void> {
  expect(r.code, r.stdout + r.stderr.slice(-2000)).toBe(0);
  expect(await fileSha256(path.join(sb.models, DEST))).toBe(sha256(model));
  expect(await readdir(path.join(sb.models, '.modelsync-store/tmp'))).toEqual([]);
}

/** Some request resumed inside a chunk, from the bytes it already had. */
function resumedMidChunk(): boolean {
  return web.requests.some((q) => {
    const start = Number(/^bytes=(\d+)-/.exec(q.range ?? '')?.[1] ?? '0');
    return start % CHUNK !== 0;
  });
}

describe('faults below HTTP (hostile-world.md, the network)', () => {
  it('a connection reset (RST) mid-body resumes with Range from the bytes it has, and verifies', async () => {
    const r = await syncThrough({ kind: 'reset-after', bytes: 100_000, times: 2 });
    await expectVerified(r);
    expect(resumedMidChunk()).toBe(true);
  });

  it('a connection closed cleanly (FIN) mid-body is a short body: resumed and verified', async () => {
    const r = await syncThrough({ kind: 'truncate-after', bytes: 100_000, times: 2 });
    await expectVerified(r);
    expect(resumedMidChunk()).toBe(true);
  });

  it('a stalled connection is cut by the idle timeout, then resumed', async () => {
    const r = await syncThrough({ kind: 'stall-after', bytes: 100_000, times: 1 }, { MODELSYNC_IDLE_TIMEOUT_MS: '300' });
    await expectVerified(r);
    expect(r.stderr).toMatch(/no data from 127\.0\.0\.1:\d+ for 300 ms/);
    expect(resumedMidChunk()).toBe(true);
  });

  it('a slow link still completes', async () => {
    const r = await syncThrough({ kind: 'slow', bytesPerSecond: 2_000_000 });
    await expectVerified(r);
  });

  it('reset before any body byte, every time: a bounded number of attempts, then a clear failure', async () => {
    const r = await syncThrough({ kind: 'reset-after', bytes: 0, times: 10_000 }, { MODELSYNC_RETRY_ATTEMPTS: '3' });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/FAILED +checkpoints\/p\.safetensors: .*(ECONNRESET|socket hang up|network error).*gave up after 3 attempts/);
    expect(web.requests.length).toBeLessThanOrEqual(3 * Math.ceil(model.length / CHUNK));
    expect(await exists(path.join(sb.models, DEST))).toBe(false);
  });
});
