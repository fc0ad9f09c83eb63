/**
 * The Hub as it answers today for Xet-stored files (issue 16, part 2): resolve's 302 carries
 * X-Xet-Hash and a rel="xet-auth" Link next to X-Linked-Etag / X-Linked-Size, and leads to a
 * bridge host with a presigned URL that expires; the bridge serves ranges, but its ETag is the
 * Xet hash. modelsync must take sha256 and size from the first hop or paths-info only, use the
 * bridge's answers only as the bridge means them, re-resolve an expired URL mid-download and
 * resume, and never log the presigned query.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, type Sandbox } from './support/cli.js';
import { rawRequest } from './support/http-get.js';
import { makeSafetensors, sha256Hex } from './support/hub.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { fileSha256 } from './support/models.js';

const MiB = 1024 * 1024;
const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;
let n = 0;


/** A fresh Xet repo holding one safetensors file of about `bytes` bytes. */
function xetModel(bytes: number): { repo: string; uri: string; content: Buffer; sha256: string } {
  n++;
  const repo = `xet-org/m-${process.pid}-${n}`;
  const content = makeSafetensors(bytes, 4242 + n);
  hub.addRepo({ id: repo, xet: true, files: [{ path: 'model.safetensors', content }] });
  return { repo, uri: `hf://${repo}/model.safetensors`, content, sha256: sha256Hex(content) };
}

const bridgeGets = (): typeof hub.stats.requests => hub.stats.requests.filter((r) => r.host === 'cdn' && r.url.startsWith('/xet-bridge-us/') && r.method === 'GET');
const resolves = (repo: string): number => hub.stats.requests.filter((r) => r.host === 'hub' && r.url.startsWith(`/${repo}/resolve/`)).length;

/** Every file under a folder, as text (the state DB and its WAL included). */
async function allText(dir: string): Promise<string> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push((await readFile(path.join(e.parentPath, e.name))).toString('latin1'));
  }
  return out.join('\n');
}

describe('hub stand-in: Xet-backed repos', () => {
  it('answers resolve the Xet way: 302 to the bridge with the sha256 on the first hop, the Xet hash as the bridge ETag', async () => {
    const m = xetModel(300_000);
    const res = await rawRequest(`${hub.endpoint}/${m.repo}/resolve/main/model.safetensors`);
    expect(res.status).toBe(302);
    expect(res.headers['x-linked-etag']).toBe(`"${m.sha256}"`);
    expect(res.headers['x-linked-size']).toBe(String(m.content.length));
    expect(res.headers['x-xet-hash']).toMatch(/^[0-9a-f]{64}$/);
    expect(res.headers['x-xet-hash']).not.toBe(m.sha256);
    expect(res.headers.link).toMatch(/rel="xet-auth"/);
    const location = String(res.headers.location);
    expect(location.startsWith(`${hub.bridgeOrigin}/xet-bridge-us/`)).toBe(true);
    expect(new URL(location).searchParams.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/);

    const part = await rawRequest(location, { headers: { range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 10-19/${m.content.length}`);
    expect(part.body).toEqual(m.content.subarray(10, 20));
    expect(part.headers.etag).toBe(`"${String(res.headers['x-xet-hash'])}"`);

    // A tampered query is refused like S3 refuses it; the JSON file description is there for clients that ask.
    const tampered = await rawRequest(location.replace(/X-Amz-Signature=[0-9a-f]/, 'X-Amz-Signature=z'));
    expect(tampered.status).toBe(403);
    const info = await rawRequest(`${hub.endpoint}/${m.repo}/resolve/main/model.safetensors`, { headers: { accept: 'application/vnd.xet-fileinfo+json' } });
    expect(info.status).toBe(200);
    expect(JSON.parse(info.body.toString())).toMatchObject({ hash: res.headers['x-xet-hash'], etag: m.sha256, size: m.content.length });
  });

  it('expires every URL issued so far after the chosen number of GETs', async () => {
    const m = xetModel(200_000);
    const location = String((await rawRequest(`${hub.endpoint}/${m.repo}/resolve/main/model.safetensors`)).headers.location);
    hub.setFaults(m.sha256, { xetExpireAfter: { requests: 1 } });
    expect((await rawRequest(location)).status).toBe(200);
    const again = await rawRequest(location);
    expect(again.status).toBe(403);
    expect(again.body.toString()).toContain('Request has expired');
    const fresh = String((await rawRequest(`${hub.endpoint}/${m.repo}/resolve/main/model.safetensors`)).headers.location);
    expect((await rawRequest(fresh)).status).toBe(200);
  });
});

describe('modelsync against Xet-backed repos', () => {
  it('syncs and verifies a Xet file; sha256 and size come from paths-info and the first hop, never from the bridge', async () => {
    sb = await sandbox(hub.endpoint);
    const m = xetModel(2 * MiB);
    // The bridge's ETag is a 64-hex value (the Xet hash), and here it also claims a linked sha256 and size of its own.
    hub.setFaults(m.sha256, { xetLyingBridge: true });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/x.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync'], sb.env());
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/x.safetensors'))).toBe(m.sha256);
    expect(hub.stats.cdnRequestsWithAuth).toBe(0);
    // The redirect was followed to the bridge (a client asking for the Xet JSON description gets no bytes).
    expect(bridgeGets().length).toBeGreaterThan(0);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);

    const lock = await runCli(['lock', '--json'], sb.env());
    expect(lock.code).toBe(0);
    const written = JSON.parse(lock.stdout) as { entries: Array<{ sha256: string; size: number; sha256From: string }> };
    expect(written.entries[0]).toMatchObject({ sha256: m.sha256, size: m.content.length, sha256From: 'hub' });
  });

  it('re-resolves a presigned URL that expires between chunks, and keeps the chunks it has', async () => {
    sb = await sandbox(hub.endpoint);
    const m = xetModel(12 * MiB);
    // Three 4 MiB chunks, one connection: the first chunk's URL is honoured once, then refused.
    hub.setFaults(m.sha256, { xetExpireAfter: { requests: 1 } });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/x.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync'], sb.env({ MODELSYNC_CONNECTIONS: '1', MODELSYNC_LOG_LEVEL: 'debug' }));
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/x.safetensors'))).toBe(m.sha256);
    expect(bridgeGets().some((g) => g.status === 403)).toBe(true);
    expect(resolves(m.repo)).toBeGreaterThanOrEqual(2);
    // Resumed, not restarted: every byte crossed the wire once.
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length);
  });

  it('resumes a cut body from the byte it reached when the URL has expired by then, and never logs the presigned query', async () => {
    sb = await sandbox(hub.endpoint);
    const m = xetModel(3 * MiB);
    hub.setFaults(m.sha256, { cutAfterBytes: { bytes: MiB, times: 1 }, xetExpireAfter: { requests: 1 } });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/x.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync'], sb.env({ MODELSYNC_LOG_LEVEL: 'trace' }));
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/x.safetensors'))).toBe(m.sha256);
    const gets = bridgeGets();
    expect(gets.map((g) => g.status)).toContain(403);
    // The resume asked for the rest only.
    expect(gets.at(-1)?.range).toMatch(/^bytes=[1-9]\d*-/);
    expect(hub.stats.bytesServed.get(m.sha256) ?? 0).toBeLessThan(m.content.length * 1.25);

    const signatures = gets.map((g) => new URL(g.url, hub.bridgeOrigin).searchParams.get('X-Amz-Signature') ?? 'missing');
    const state = await allText(sb.state);
    for (const text of [r.stdout, r.stderr, state]) {
      for (const s of signatures) expect(text).not.toContain(s);
      expect(text).not.toMatch(/X-Amz-(Signature|Credential)=/);
    }
  });
});
