/**
 * Issue 13: a Hub, mirror or CDN that lies in the headers of its answers, end to end. Resolve
 * headers that contradict what was resolved (another commit, another size, a value that is no
 * sha256) are refused or start the entry over; a Content-Range that makes no sense is never
 * trusted, and the file still comes, as one verified stream. The parsers themselves are held by
 * test/remote-parsers.test.ts.
 */
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { startHub, type BlobFaults, type Hub } from '../support/hub.js';
import { addModel, exists, fileSha256, type TestModel } from '../support/models.js';

let hub: Hub;
let sb: Sandbox;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
});
afterAll(async () => {
  await hub.close();
});
afterEach(async () => {
  hub.clearFaults();
  await sb?.cleanup();
});

interface Report {
  entries: { state: string; error?: { code: string; message: string } }[];
}

async function syncWith(faults: BlobFaults, size = 300_000): Promise<{ r: CliResult; report: Report; m: TestModel; dest: string }> {
  sb = await sandbox(hub.endpoint);
  const m = addModel(hub, size);
  hub.setFaults(m.sha256, faults);
  await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/l.safetensors' }]);
  hub.resetStats();
  const r = await runCli(['sync', '--json', '--chunk-size', '64K', '--connections', '4'], sb.env({ MODELSYNC_RETRY_ATTEMPTS: '2' }), { timeoutMs: 40_000 });
  expect(r.signal).toBeNull();
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stdout + r.stderr).not.toContain('internal error');
  return { r, report: JSON.parse(r.stdout) as Report, m, dest: path.join(sb.models, 'checkpoints/l.safetensors') };
}

const cdnRequests = (): number => hub.stats.requests.filter((q) => q.host === 'cdn').length;

describe('lying answers (issue 13)', () => {
  it('a resolve answered for another commit than the one asked is refused, and the CDN never asked', async () => {
    const { r, report, dest } = await syncWith({ resolveHeaders: { 'x-repo-commit': 'f'.repeat(40) } });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_REMOTE_INVALID');
    expect(report.entries[0]?.error?.message).toMatch(/answered for commit f{40}/);
    expect(cdnRequests()).toBe(0);
    expect(await exists(dest)).toBe(false);
  });

  it('an X-Linked-Etag that is no sha256 is refused, escaped in the message', async () => {
    const { r, report } = await syncWith({ resolveHeaders: { 'x-linked-etag': '"../../etc/passwd"' } });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_REMOTE_INVALID');
    expect(report.entries[0]?.error?.message).toContain('X-Linked-Etag that is not a sha256 ("\\"../../etc/passwd\\"")');
    expect(cdnRequests()).toBe(0);
  });

  it('an X-Linked-Size that is no size is refused', async () => {
    const { r, report } = await syncWith({ resolveHeaders: { 'x-linked-size': '1e9' } });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_REMOTE_INVALID');
  });

  it('an X-Linked-Size other than the size resolved means the file changed: started over, then a clear failure', async () => {
    const { r, report, m, dest } = await syncWith({ resolveHeaders: { 'x-linked-size': '12345' } });
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_SOURCE_CHANGED');
    expect(report.entries[0]?.error?.message).toMatch(new RegExp(`has 12345 bytes, expected ${m.content.length}`));
    expect(await exists(dest)).toBe(false);
  });

  it('a CDN whose Content-Range is garbage is not trusted: the file comes as one stream from 0, verified', async () => {
    const { r, m, dest } = await syncWith({ contentRange: 'bytes lots/of/them' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await fileSha256(dest)).toBe(m.sha256);
    expect(r.stderr).toMatch(/does not serve usable ranges; downloading as one stream/);
  });

  it('a CDN whose Content-Range claims an inverted range is not trusted either', async () => {
    const { r, m, dest } = await syncWith({ contentRange: 'bytes 65535-0/300000' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await fileSha256(dest)).toBe(m.sha256);
  });
});
