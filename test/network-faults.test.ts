import { readdir } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, type Sandbox } from './support/cli.js';
import { type BlobFaults } from './support/hub.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, exists, fileSha256, type TestModel } from './support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;


const SIZE = 640 * 1024;
const CHUNK = ['--chunk-size', '64K', '--connections', '4'];

/** Sync one fresh model with faults on its blob; returns the CLI result and the model. */
async function syncWith(faults: BlobFaults, env: Record<string, string> = {}, size = SIZE): Promise<{ r: Awaited<ReturnType<typeof runCli>>; m: TestModel; dest: string }> {
  sb = await sandbox(hub.endpoint);
  const m = addModel(hub, size);
  hub.setFaults(m.sha256, faults);
  await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/f.safetensors' }]);
  hub.resetStats();
  const r = await runCli(['sync', ...CHUNK], sb.env(env));
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stderr).not.toContain('internal error');
  return { r, m, dest: path.join(sb.models, 'checkpoints/f.safetensors') };
}

async function expectClean(dest: string, m: TestModel): Promise<void> {
  expect(await fileSha256(dest)).toBe(m.sha256);
  expect(await readdir(path.join(sb.models, '.modelsync-store/tmp'))).toEqual([]);
}

describe('network faults (hostile-world.md, the network)', () => {
  it.each([0.3, 0.9])('a connection cut at %s of a chunk resumes with Range', async (frac) => {
    const { r, m, dest } = await syncWith({ cutAfterBytes: { bytes: Math.floor(64 * 1024 * frac), times: 3 } });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
    // Resumed, not restarted: a little over one copy of the bytes came from the CDN.
    expect(hub.stats.bytesServed.get(m.sha256)).toBeLessThan(m.content.length * 1.2);
    expect(hub.stats.requests.some((q) => q.host === 'cdn' && q.range !== undefined && !/^bytes=\d*[0]-/.test(q.range))).toBe(true);
  });

  it('many cuts that each make progress still finish (the attempt counter resets when bytes flow)', async () => {
    const { r, m, dest } = await syncWith({ cutAfterBytes: { bytes: 16 * 1024, times: 30 } }, { MODELSYNC_RETRY_ATTEMPTS: '3' });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
  });

  it('a stalled body is aborted by the idle timeout and resumed', async () => {
    const { r, m, dest } = await syncWith({ stallAfterBytes: { bytes: 10_000, times: 2 } }, { MODELSYNC_IDLE_TIMEOUT_MS: '300' });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
    expect(r.stderr).toMatch(/no data from 127\.0\.0\.2/);
  });

  it('a slow body still completes', async () => {
    const { r, m, dest } = await syncWith({ bytesPerSecond: 400_000 }, {}, 200_000);
    expect(r.code).toBe(0);
    await expectClean(dest, m);
  });

  it('a body shorter than Content-Length is detected and resumed', async () => {
    const { r, m, dest } = await syncWith({ shorterBody: { times: 3 } });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
    expect(r.stderr).toMatch(/closed the connection after \d+ of \d+ body bytes|body ended at byte|ECONNRESET/);
  });

  it('a body longer than expected is cut at the expected size', async () => {
    const { r, m, dest } = await syncWith({ longerBody: { times: 2 } });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
  });

  it('right length, wrong bytes: discarded and re-downloaded', async () => {
    const { r, m, dest } = await syncWith({ flipByteAt: { offset: 1000, times: 1 } });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(2 * m.content.length);
  });

  it('wrong bytes every time: fails naming source, expected and actual hash; nothing published', async () => {
    const { r, m, dest } = await syncWith({ flipByteAt: { offset: 1000, times: 100 } });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(m.uri);
    expect(r.stdout).toMatch(new RegExp(`expected ${m.sha256}, got [0-9a-f]{64}`));
    expect(await exists(dest)).toBe(false);
    expect(await exists(path.join(sb.models, '.modelsync-store/blobs/sha256', m.sha256.slice(0, 2), m.sha256))).toBe(false);
    expect(await readdir(path.join(sb.models, '.modelsync-store/tmp'))).toEqual([]);
  });

  it('a server that ignores Range: restart from 0 as one stream, never a double-length file', async () => {
    const { r, m, dest } = await syncWith({ ignoreRange: true });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
    expect(r.stderr).toMatch(/does not serve usable ranges/);
  });

  it('a 206 whose Content-Range does not match the request is not trusted', async () => {
    const { r, m, dest } = await syncWith({ wrongContentRange: { times: 1 } });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
  });

  it('503 three times, then 200: succeeds with backoff', async () => {
    const { r, m, dest } = await syncWith({ status503: 3 }, {}, 50_000);
    expect(r.code).toBe(0);
    await expectClean(dest, m);
    const cdn = hub.stats.requests.filter((q) => q.host === 'cdn');
    expect(cdn.map((q) => q.status)).toEqual([503, 503, 503, 206]);
  });

  it('429 with Retry-After: 1 waits and succeeds', async () => {
    const { r, m, dest } = await syncWith({ rateLimit: { times: 1, retryAfter: '1' } }, {}, 50_000);
    expect(r.code).toBe(0);
    await expectClean(dest, m);
  });

  it('429 with Retry-After: 86400 fails clearly instead of waiting a day', async () => {
    const { r, dest } = await syncWith({ rateLimit: { times: 5, retryAfter: '86400' } }, {}, 50_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/asked to wait 86400 s, more than the 120 s cap/);
    expect(await exists(dest)).toBe(false);
  });

  it('an expired signed CDN URL is resolved again', async () => {
    const { r, m, dest } = await syncWith({ cdnExpire: { times: 2 } });
    expect(r.code).toBe(0);
    await expectClean(dest, m);
  });

  it('a redirect loop ends in a bounded error', async () => {
    sb = await sandbox(hub.endpoint);
    let hits = 0;
    const srv = http.createServer((_req, res) => {
      hits++;
      res.writeHead(302, { location: '/again' }).end();
    });
    await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/m.safetensors`;
    await sb.writeManifest([{ source: url, dest: 'checkpoints/loop.safetensors', sha256: 'a'.repeat(64), size: 100 }]);
    const r = await runCli(['sync'], sb.env({ MODELSYNC_RETRY_ATTEMPTS: '1' }));
    srv.close();
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/more than 10 redirects/);
    expect(hits).toBeLessThanOrEqual(11);
  });

  it('a DNS failure fails closed and names the host, with no secret', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([{ source: 'https://no-such-host.invalid/m.safetensors', dest: 'checkpoints/dns.safetensors', sha256: 'b'.repeat(64), size: 10 }]);
    const r = await runCli(['sync'], sb.env({ MODELSYNC_HTTP_TOKENS: 'no-such-host.invalid=SRCTOKENdoNotLeak0123456789' }));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/no-such-host\.invalid/);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  });
});
