import { readdir, readFile, stat, unlink } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, leakedSecrets, runCli, type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, exists, fileSha256, sha256 } from './support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;


describe('modelsync sync', () => {
  it('syncs a mixed manifest: LFS weights, a plain config, a dataset file, an https file', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 600_000, { extra: [{ path: 'config.json', content: Buffer.from('{"a": 1}\n'), lfs: false }] });
    const dsContent = Buffer.from('x'.repeat(200_000));
    hub.addRepo({ id: 'test-org/a-dataset', type: 'dataset', files: [{ path: 'emb/e.safetensors', content: makeSt(dsContent) }] });
    const web = await staticServer(Buffer.from('upscaler-bytes'.repeat(1000)));
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/m.safetensors' },
      { source: `hf://${m.repo}/config.json`, dest: 'configs/m.json' },
      { source: 'hf://datasets/test-org/a-dataset/emb/e.safetensors', dest: 'embeddings/e.safetensors' },
      { source: `${web.url}/up.pth`, dest: 'upscale_models/up.pth', sha256: sha256(web.body), allow_pickle: true },
    ]);
    const r = await runCli(['sync'], sb.env());
    await web.close();
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
    expect(await readFile(path.join(sb.models, 'configs/m.json'), 'utf8')).toBe('{"a": 1}\n');
    expect(await fileSha256(path.join(sb.models, 'upscale_models/up.pth'))).toBe(sha256(web.body));
    // Published as a hard link to a read-only store blob.
    const pub = await stat(path.join(sb.models, 'checkpoints/m.safetensors'));
    const blob = await stat(path.join(sb.models, '.modelsync-store/blobs/sha256', m.sha256.slice(0, 2), m.sha256));
    expect(pub.ino).toBe(blob.ino);
    expect(blob.mode & 0o222).toBe(0);
    expect(r.stdout).toMatch(/4 entries: 0 present, 4 published, 0 failed/);
    expect(hub.stats.cdnRequestsWithAuth).toBe(0);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
    expect(await readdir(path.join(sb.models, '.modelsync-store/tmp'))).toEqual([]);
  });

  it('fetches identical content once and publishes it to every dest', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 400_000);
    hub.resetStats();
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/a.safetensors' },
      { source: m.uri, dest: 'checkpoints/b.safetensors' },
      { source: m.uri, dest: 'loras/c.safetensors', sha256: m.sha256 },
    ]);
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length);
    for (const d of ['checkpoints/a.safetensors', 'checkpoints/b.safetensors', 'loras/c.safetensors']) {
      expect(await fileSha256(path.join(sb.models, d))).toBe(m.sha256);
    }
  });

  it('warm re-sync makes no network request and reads no model byte', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 300_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/w.safetensors' }]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    const file = path.join(sb.models, 'checkpoints/w.safetensors');
    // relatime moves atime on a read when atime is not newer than mtime or ctime. The publish's
    // link came after the download's reads, so the detector is armed as the sync left it (setting
    // an old atime with touch would move the ctime, and a changed ctime is re-verified).
    const before = await stat(file, { bigint: true });
    expect(before.atimeNs <= before.ctimeNs).toBe(true);
    hub.resetStats();
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('1 entries: 1 present');
    expect(hub.stats.requests).toEqual([]);
    expect((await stat(file, { bigint: true })).atimeNs).toBe(before.atimeNs);
    await readFile(file); // the detector itself works: a read does move atime
    expect((await stat(file, { bigint: true })).atimeNs).not.toBe(before.atimeNs);
  });

  it('re-publishes from the store offline (HF_HUB_OFFLINE=1) with no request', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 200_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/o.safetensors' }]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    await unlink(path.join(sb.models, 'checkpoints/o.safetensors'));
    hub.resetStats();
    const r = await runCli(['sync'], sb.env({ HF_HUB_OFFLINE: '1' }));
    expect(r.code).toBe(0);
    expect(hub.stats.requests).toEqual([]);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/o.safetensors'))).toBe(m.sha256);
  });

  it('offline with nothing cached fails clearly', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 1000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/x.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync'], sb.env({ HF_HUB_OFFLINE: '1' }));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/HF_HUB_OFFLINE is set/);
    expect(hub.stats.requests).toEqual([]);
  });

  it('private repos need the token; the token never reaches the CDN nor any output', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 100_000, { private: true });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/p.safetensors' }]);
    const anon = await runCli(['sync'], sb.env({ HF_TOKEN: '' }));
    expect(anon.code).toBe(1);
    expect(anon.stdout).toMatch(/set HF_TOKEN/);
    const bad = await runCli(['sync'], sb.env({ HF_TOKEN: 'hf_wrongTOKEN000000000000' }));
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/check that HF_TOKEN is valid/);
    expect(bad.stdout + bad.stderr).not.toContain('hf_wrongTOKEN000000000000');
    hub.resetStats();
    const ok = await runCli(['sync'], sb.env());
    expect(ok.code).toBe(0);
    expect(hub.stats.cdnRequestsWithAuth).toBe(0);
    expect(hub.stats.requests.filter((q) => q.host === 'hub').every((q) => q.authorization === `Bearer ${FAKE_HF_TOKEN}`)).toBe(true);
    expect(leakedSecrets(anon.stdout, anon.stderr, ok.stdout, ok.stderr)).toEqual([]);
  });

  it('a gated repo says to request access', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 1000, { gated: true });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/g.safetensors' }]);
    const r = await runCli(['sync'], sb.env());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/gated.*request access/i);
    expect(await exists(path.join(sb.models, 'checkpoints/g.safetensors'))).toBe(false);
  });

  it('two repos resolved at once keep their own Hub error codes: a gated one is E_GATED, a missing revision E_NOT_FOUND', async () => {
    sb = await sandbox(hub.endpoint);
    const gated = addModel(hub, 1000, { gated: true });
    const other = addModel(hub, 1000);
    hub.gateApiCalls = true;
    // The missing revision's answer is split around the gated one's: its headers arrive first,
    // its body only after the gated answer (with its x-error-code) was read.
    hub.interleaveApi = { split: other.repo, inside: gated.repo, gapMs: 150 };
    try {
      await sb.writeManifest([
        { source: gated.uri, dest: 'checkpoints/gated.safetensors' },
        { source: `hf://${other.repo}@no-such-branch/${other.path}`, dest: 'checkpoints/other.safetensors' },
      ]);
      const r = await runCli(['sync', '--json'], sb.env());
      expect(r.code).toBe(1);
      const report = JSON.parse(r.stdout) as { entries: { dest: string; error?: { code: string } }[] };
      expect(report.entries.map((e) => [e.dest, e.error?.code])).toEqual([
        ['checkpoints/gated.safetensors', 'E_GATED'],
        ['checkpoints/other.safetensors', 'E_NOT_FOUND'],
      ]);
    } finally {
      hub.gateApiCalls = false;
      hub.interleaveApi = undefined;
    }
  });

  it('one bad path in a repo fails that entry alone; the repo\'s other files still arrive', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 50_000);
    await sb.writeManifest([
      { source: `hf://${m.repo}/typo.safetensors`, dest: 'checkpoints/typo.safetensors' },
      { source: m.uri, dest: 'checkpoints/good.safetensors' },
    ]);
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/FAILED\s+checkpoints\/typo\.safetensors: .*typo\.safetensors does not exist/);
    expect(r.stdout).toMatch(/published\s+checkpoints\/good\.safetensors/);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/good.safetensors'))).toBe(m.sha256);
  });

  it('a missing file, revision or repo is named', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 1000);
    await sb.writeManifest([
      { source: `hf://${m.repo}/nope.safetensors`, dest: 'checkpoints/a.safetensors' },
      { source: `hf://${m.repo.replace('test-org', 'test-org')}@v9/model.safetensors`, dest: 'checkpoints/b.safetensors' },
      { source: 'hf://test-org/does-not-exist/model.safetensors', dest: 'checkpoints/c.safetensors' },
    ]);
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/nope\.safetensors does not exist/);
    expect(r.stdout).toMatch(/revision "v9" not found/);
    expect(r.stdout).toMatch(/repo test-org\/does-not-exist not found/);
  });
});

function makeSt(payload: Buffer): Buffer {
  let hdr = Buffer.from(JSON.stringify({ t: { dtype: 'U8', shape: [payload.length], data_offsets: [0, payload.length] } }));
  hdr = Buffer.concat([hdr, Buffer.alloc((8 - (hdr.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hdr.length));
  return Buffer.concat([len, hdr, payload]);
}

async function staticServer(body: Buffer): Promise<{ url: string; body: Buffer; close(): Promise<void> }> {
  const srv = http.createServer((req, res) => {
    const range = /^bytes=(\d+)-(\d+)?$/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      const end = range[2] === undefined ? body.length - 1 : Math.min(Number(range[2]), body.length - 1);
      res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 });
      res.end(body.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, body, close: () => new Promise((r) => srv.close(() => r())) };
}
