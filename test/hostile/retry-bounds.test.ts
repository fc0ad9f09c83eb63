/**
 * Issue 13, class 7: every retry loop ends, bounded by attempts and by the bytes fetched per
 * entry. A source that keeps failing the same way (a body always one byte short, an answer cut
 * after every byte, the wrong bytes every time) gives up after a bounded number of requests and
 * bytes, with one clear error; "progress" is bytes kept, never bytes thrown away.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { makeSafetensors, startHub, type BlobFaults, type Hub } from '../support/hub.js';
import { addModel, exists, sha256 } from '../support/models.js';

const ATTEMPTS = 3;
const model = makeSafetensors(200_000, 707);
let hub: Hub;
let short: ByteServer;
let sb: Sandbox;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  // The example: no ranges, and every answer is a complete body one byte short.
  short = await startByteServer({ files: { '/short.safetensors': model }, faults: { '/short.safetensors': { ignoreRange: true, truncateBy: 1 } } });
});
afterAll(async () => {
  await Promise.all([hub.close(), short.close()]);
});
afterEach(async () => {
  hub.clearFaults();
  await sb?.cleanup();
});

interface Report {
  entries: { state: string; error?: { code: string; message: string } }[];
}

async function run(args: string[], entries: Record<string, unknown>[], env: Record<string, string> = {}): Promise<{ r: CliResult; report: Report | undefined }> {
  sb = await sandbox(hub.endpoint);
  await sb.writeManifest(entries);
  hub.resetStats();
  const r = await runCli(args, sb.env({ MODELSYNC_RETRY_ATTEMPTS: String(ATTEMPTS), ...env }), { timeoutMs: 40_000 });
  expect(r.signal, 'killed by the test timeout: the loop did not end').toBeNull();
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stdout + r.stderr).not.toContain('internal error');
  return { r, report: args.includes('--json') && r.stdout.startsWith('{') ? (JSON.parse(r.stdout) as Report) : undefined };
}

async function expectNothingLeft(dest: string): Promise<void> {
  expect(await exists(path.join(sb.models, dest))).toBe(false);
  expect(await readdir(path.join(sb.models, '.modelsync-store/tmp')).catch(() => [])).toEqual([]);
}

async function hubSync(faults: BlobFaults, size = 640 * 1024, env: Record<string, string> = {}): Promise<{ r: CliResult; report: Report | undefined; served: number; requests: number; size: number }> {
  const m = addModel(hub, size);
  hub.setFaults(m.sha256, faults);
  const out = await run(['sync', '--json', '--chunk-size', '64K', '--connections', '4'], [{ source: m.uri, dest: 'checkpoints/b.safetensors' }], env);
  return { ...out, served: hub.stats.bytesServed.get(m.sha256) ?? 0, requests: hub.stats.requests.filter((q) => q.host === 'cdn').length, size: m.content.length };
}

describe('every retry loop ends (issue 13, class 7)', () => {
  it("a source without ranges whose body is always one byte short of the manifest's size gives up after bounded attempts", async () => {
    const before = { requests: short.requests.length, bytes: short.bytesServed };
    // A budget this large leaves the attempt counter to end it (the next test ends it by bytes).
    const entry = { source: `${short.url}/short.safetensors`, dest: 'checkpoints/s.safetensors', sha256: sha256(model), size: model.length };
    const { r, report } = await run(['sync', '--json'], [entry], { MODELSYNC_FETCH_BUDGET: '100' });
    expect(r.code).toBe(1);
    expect(report?.entries[0]?.error?.code).toBe('E_NETWORK');
    expect(report?.entries[0]?.error?.message).toMatch(/gave up after 3 attempts/);
    // One ranged try, its resume (refused: a 200 to a Range), then the stream's attempts.
    expect(short.requests.length - before.requests).toBeLessThanOrEqual(2 + ATTEMPTS);
    expect(short.bytesServed - before.bytes).toBeLessThanOrEqual((2 + ATTEMPTS) * model.length);
    await expectNothingLeft('checkpoints/s.safetensors');
  });

  it('the same with the default budget: at most 3x the size is fetched, then a clear error', async () => {
    const before = short.bytesServed;
    const { r, report } = await run(['sync', '--json'], [{ source: `${short.url}/short.safetensors`, dest: 'checkpoints/s.safetensors', sha256: sha256(model), size: model.length }], { MODELSYNC_RETRY_ATTEMPTS: '50' });
    expect(r.code).toBe(1);
    expect(report?.entries[0]?.error?.code).toBe('E_FETCH_BUDGET');
    // The server counts what it handed to its kernel: besides the 3x read, the body in flight
    // when the budget ran out, and the one answered 200 to a resume (closed unread).
    expect(short.bytesServed - before).toBeLessThanOrEqual(5 * model.length);
    await expectNothingLeft('checkpoints/s.safetensors');
  });

  it('the same from the Hub: a CDN without ranges that always sends one byte less than paths-info said', async () => {
    const { r, report, requests } = await hubSync({ ignoreRange: true, truncateBy: 1 }, 200_000, { MODELSYNC_FETCH_BUDGET: '100' });
    expect(r.code).toBe(1);
    expect(report?.entries[0]?.error?.code).toBe('E_NETWORK');
    // Four chunks each answered 200 (ranges unusable), then the stream's attempts.
    expect(requests).toBeLessThanOrEqual(4 + ATTEMPTS);
    await expectNothingLeft('checkpoints/b.safetensors');
  });

  it('a server that cuts every answer after one byte gives up: a byte kept of 64 KiB is no progress', async () => {
    const { r, report, requests } = await hubSync({ cutAfterBytes: { bytes: 1, times: 1_000_000 } });
    expect(r.code).toBe(1);
    expect(report?.entries[0]?.error?.code).toBe('E_NETWORK');
    // Ten chunks, each allowed ATTEMPTS failures in a row; today each byte reset the count.
    expect(requests).toBeLessThanOrEqual(10 * ATTEMPTS + 4);
    await expectNothingLeft('checkpoints/b.safetensors');
  });

  it('wrong bytes every time: the fetch budget ends the clean re-downloads (MODELSYNC_FETCH_BUDGET)', async () => {
    // In the tensor data, past the header: a header that is not one fails at once instead (E_CORRUPT).
    const { r, report, served, size } = await hubSync({ flipByteAt: { offset: 320 * 1024, times: 1_000_000 } }, 640 * 1024, { MODELSYNC_FETCH_BUDGET: '1.5' });
    expect(r.code).toBe(1);
    expect(report?.entries[0]?.error?.code).toBe('E_FETCH_BUDGET');
    expect(report?.entries[0]?.error?.message).toMatch(/1\.5x its size/);
    // A copy and a half, plus what the connections had in flight when it stopped.
    expect(served).toBeLessThanOrEqual(1.5 * size + 4 * 64 * 1024);
    await expectNothingLeft('checkpoints/b.safetensors');
  });

  it('a bad MODELSYNC_FETCH_BUDGET is bad usage (exit 2), not a silent default', async () => {
    const before = short.requests.length;
    const { r } = await run(['sync'], [{ source: `${short.url}/short.safetensors`, dest: 'checkpoints/s.safetensors', sha256: sha256(model) }], { MODELSYNC_FETCH_BUDGET: '0.5' });
    expect(r.code).toBe(2);
    expect(r.stderr + r.stdout).toMatch(/MODELSYNC_FETCH_BUDGET/);
    expect(short.requests.length - before).toBe(0);
  });

  it('lock: hashing a source whose body is always one byte short gives up after bounded attempts', async () => {
    const before = short.requests.length;
    const { r } = await run(['lock'], [{ source: `${short.url}/short.safetensors`, dest: 'checkpoints/s.safetensors', size: model.length }]);
    expect(r.code).toBe(1);
    expect(short.requests.length - before).toBeLessThanOrEqual(1 + ATTEMPTS);
  });
});
