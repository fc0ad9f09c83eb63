import { modelInfo, pathsInfo, listFiles, datasetInfo } from '@huggingface/hub';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from './http-get.js';
import { gitBlobSha1Hex, makeSafetensors, sha256Hex, startHub, type Hub } from './hub.js';

const WEIGHTS = makeSafetensors(300_000, 7);
const WEIGHTS_SHA = sha256Hex(WEIGHTS);
const CONFIG = Buffer.from('{"_class_name": "UNet2DConditionModel"}\n');
const TOKEN = 'hf_valid_test_token';

let hub: Hub;
let commit: string;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(TOKEN);
  ({ commit } = hub.addRepo({
    id: 'acme/sd',
    files: [
      { path: 'unet/model.safetensors', content: WEIGHTS },
      { path: 'config.json', content: CONFIG },
      { path: 'unet/config.json', content: CONFIG },
    ],
  }));
  hub.addRepo({ id: 'acme/secret', private: true, files: [{ path: 'a.safetensors', content: WEIGHTS }] });
  hub.addRepo({ id: 'acme/gated', gated: true, files: [{ path: 'a.safetensors', content: WEIGHTS }] });
  hub.addRepo({ id: 'acme/data', type: 'dataset', files: [{ path: 'x.json', content: CONFIG }] });
});

afterAll(async () => {
  await hub.close();
});

async function cdnUrl(path: string): Promise<string> {
  const res = await rawRequest(`${hub.endpoint}/acme/sd/resolve/main/${path}`);
  expect(res.status).toBe(302);
  return String(res.headers.location);
}

describe('hub stand-in: metadata', () => {
  it('answers a revision with its commit sha, by branch, by commit and by percent-encoded ref', async () => {
    const byBranch = await rawRequest(`${hub.endpoint}/api/models/acme/sd/revision/main?blobs=true`);
    const info = JSON.parse(byBranch.body.toString()) as { sha: string; siblings: Array<{ rfilename: string; lfs?: { sha256: string } }> };
    expect(info.sha).toBe(commit);
    expect(info.siblings.find((s) => s.rfilename === 'unet/model.safetensors')?.lfs?.sha256).toBe(WEIGHTS_SHA);

    const pushed = hub.pushFiles('acme/sd', [{ path: 'config.json', content: Buffer.from('{}') }]);
    hub.setRef('acme/sd', 'refs/pr/1', commit);
    const byCommit = await rawRequest(`${hub.endpoint}/api/models/acme/sd/revision/${commit}`);
    const byRef = await rawRequest(`${hub.endpoint}/api/models/acme/sd/revision/refs%2Fpr%2F1`);
    const byMain = await rawRequest(`${hub.endpoint}/api/models/acme/sd/revision/main`);
    expect(JSON.parse(byCommit.body.toString())).toMatchObject({ sha: commit });
    expect(JSON.parse(byRef.body.toString())).toMatchObject({ sha: commit });
    expect(JSON.parse(byMain.body.toString())).toMatchObject({ sha: pushed.commit });
    const old = await rawRequest(`${hub.endpoint}/acme/sd/resolve/${commit}/config.json`);
    expect(old.body).toEqual(CONFIG);

    const missing = await rawRequest(`${hub.endpoint}/api/models/acme/sd/revision/nope`);
    expect([missing.status, missing.headers['x-error-code']]).toEqual([404, 'RevisionNotFound']);
  });

  it('works with @huggingface/hub modelInfo, datasetInfo, pathsInfo and listFiles', async () => {
    const info = await modelInfo({ name: 'acme/sd', revision: commit, hubUrl: hub.endpoint, additionalFields: ['sha'] });
    expect(info).toMatchObject({ name: 'acme/sd', sha: commit, private: false });
    const ds = await datasetInfo({ name: 'acme/data', hubUrl: hub.endpoint, additionalFields: ['sha'] });
    expect(ds.name).toBe('acme/data');

    const paths = await pathsInfo({
      repo: 'acme/sd',
      paths: ['unet/model.safetensors', 'config.json', 'nope.bin'],
      revision: commit,
      hubUrl: hub.endpoint,
    });
    expect(paths.map((p) => [p.path, p.size, p.lfs?.oid, p.oid?.length])).toEqual([
      ['unet/model.safetensors', WEIGHTS.length, WEIGHTS_SHA, 40],
      ['config.json', CONFIG.length, undefined, 40],
    ]);
    expect(paths[1]?.oid).toBe(gitBlobSha1Hex(CONFIG));

    hub.treePageSize = 2;
    const listed = [];
    for await (const f of listFiles({ repo: 'acme/sd', revision: commit, recursive: true, hubUrl: hub.endpoint })) listed.push(f.path);
    hub.treePageSize = 1000;
    expect(listed).toEqual(['config.json', 'unet', 'unet/config.json', 'unet/model.safetensors']);
  });
});

describe('hub stand-in: downloads', () => {
  it('redirects an LFS resolve to the CDN on another host, with the linked etag and size', async () => {
    const res = await rawRequest(`${hub.endpoint}/acme/sd/resolve/main/unet/model.safetensors`, { method: 'HEAD' });
    expect(res.status).toBe(302);
    expect(res.headers['x-linked-etag']).toBe(`"${WEIGHTS_SHA}"`);
    expect(res.headers['x-linked-size']).toBe(String(WEIGHTS.length));
    expect(res.headers['x-repo-commit']).toMatch(/^[0-9a-f]{40}$/);
    expect(res.headers.etag).toBeUndefined();
    const location = new URL(String(res.headers.location));
    expect(location.origin).toBe(hub.cdnOrigin);
    expect(location.hostname).not.toBe(new URL(hub.endpoint).hostname);
    expect(location.searchParams.get('Signature')).toBeTruthy();

    const unsigned = await rawRequest(`${hub.cdnOrigin}${location.pathname}`);
    expect(unsigned.status).toBe(403);
  });

  it('serves ranges from the CDN and refuses unsatisfiable ones', async () => {
    const url = await cdnUrl('unet/model.safetensors');
    const part = await rawRequest(url, { headers: { range: 'bytes=100-199' } });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 100-199/${WEIGHTS.length}`);
    expect(part.body).toEqual(WEIGHTS.subarray(100, 200));
    const tail = await rawRequest(url, { headers: { range: `bytes=${WEIGHTS.length - 10}-` } });
    expect(tail.body).toEqual(WEIGHTS.subarray(WEIGHTS.length - 10));
    const beyond = await rawRequest(url, { headers: { range: `bytes=${WEIGHTS.length}-` } });
    expect(beyond.status).toBe(416);
  });

  it('serves plain files with a git-sha1 ETag, directly or via a relative 307', async () => {
    const direct = await rawRequest(`${hub.endpoint}/acme/sd/resolve/${commit}/unet/config.json`);
    expect(direct.status).toBe(200);
    expect(direct.headers.etag).toBe(`"${gitBlobSha1Hex(CONFIG)}"`);
    expect(direct.body).toEqual(CONFIG);

    hub.plainRedirect = true;
    const redirected = await rawRequest(`${hub.endpoint}/acme/sd/resolve/${commit}/unet/config.json`);
    hub.plainRedirect = false;
    expect(redirected.status).toBe(307);
    const location = String(redirected.headers.location);
    expect(location.startsWith(`/api/resolve-cache/models/acme/sd/${commit}/unet/config.json?`)).toBe(true);
    const followed = await rawRequest(`${hub.endpoint}${location}`);
    expect(followed.body).toEqual(CONFIG);

    const missing = await rawRequest(`${hub.endpoint}/acme/sd/resolve/main/nope.json`);
    expect([missing.status, missing.headers['x-error-code']]).toEqual([404, 'EntryNotFound']);
  });

  it('keeps private and gated repos closed', async () => {
    const anon = await rawRequest(`${hub.endpoint}/api/models/acme/secret/revision/main`);
    expect(anon.status).toBe(401);
    const bad = await rawRequest(`${hub.endpoint}/acme/secret/resolve/main/a.safetensors`, { headers: { authorization: 'Bearer hf_wrong' } });
    expect([bad.status, bad.headers['x-error-message']]).toEqual([401, 'Invalid username or password.']);
    const good = await rawRequest(`${hub.endpoint}/acme/secret/resolve/main/a.safetensors`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(good.status).toBe(302);

    const gatedAnon = await rawRequest(`${hub.endpoint}/acme/gated/resolve/main/a.safetensors`);
    expect([gatedAnon.status, gatedAnon.headers['x-error-code']]).toEqual([401, 'GatedRepo']);
    const gatedNotApproved = await rawRequest(`${hub.endpoint}/acme/gated/resolve/main/a.safetensors`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect([gatedNotApproved.status, gatedNotApproved.headers['x-error-code']]).toEqual([403, 'GatedRepo']);
    expect(String(gatedNotApproved.headers['x-error-message'])).toMatch(/ask for access/);
    const unknown = await rawRequest(`${hub.endpoint}/acme/none/resolve/main/a.safetensors`);
    expect([unknown.status, unknown.headers['x-error-code']]).toEqual([404, 'RepoNotFound']);
  });
});

describe('hub stand-in: faults', () => {
  it('answers 503 the given number of times, then the file', async () => {
    hub.setFaults(WEIGHTS_SHA, { status503: 2 });
    const url = await cdnUrl('unet/model.safetensors');
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await rawRequest(url)).status);
    expect(statuses).toEqual([503, 503, 200]);
    hub.clearFaults();
  });

  it('cuts the connection after exactly N body bytes, and counts them', async () => {
    hub.resetStats();
    hub.setFaults(WEIGHTS_SHA, { cutAfterBytes: { bytes: 12_345, times: 1 } });
    const url = await cdnUrl('unet/model.safetensors');
    const cut = await rawRequest(url);
    expect(cut.status).toBe(200);
    expect(cut.error).toBeDefined();
    expect(sha256Hex(cut.body)).toBe(sha256Hex(WEIGHTS.subarray(0, 12_345)));
    const whole = await rawRequest(url, { headers: { range: 'bytes=12345-' } });
    expect(sha256Hex(whole.body)).toBe(sha256Hex(WEIGHTS.subarray(12_345)));
    expect(hub.stats.bytesServed.get(WEIGHTS_SHA)).toBe(WEIGHTS.length);
    expect(hub.stats.cdnRequestsWithAuth).toBe(0);
    hub.clearFaults();
  });

  it('flips a byte, ignores Range, and lies about length when told to', async () => {
    hub.setFaults(WEIGHTS_SHA, { flipByteAt: { offset: 5, times: 1 }, ignoreRange: true, longerBody: { times: 1 } });
    const url = await cdnUrl('unet/model.safetensors');
    const res = await rawRequest(url, { headers: { range: 'bytes=0-99' } });
    expect(res.status).toBe(200);
    expect(res.body.length).toBeGreaterThan(WEIGHTS.length);
    expect(res.body[5]).toBe((WEIGHTS[5] ?? 0) ^ 0xff);
    // toEqual walks Buffers byte by byte (about 1 s for 300 KB); compare digests instead.
    expect(sha256Hex(res.body.subarray(6, WEIGHTS.length))).toBe(sha256Hex(WEIGHTS.subarray(6)));
    hub.clearFaults();
  });

  it('stalls a body without blocking close()', async () => {
    const other = await startHub();
    other.addRepo({ id: 'a/b', files: [{ path: 'w.safetensors', content: WEIGHTS }] });
    other.setFaults(WEIGHTS_SHA, { stallAfterBytes: { bytes: 1000, times: 1 } });
    const loc = String((await rawRequest(`${other.endpoint}/a/b/resolve/main/w.safetensors`)).headers.location);
    const pending = rawRequest(loc, { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await other.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    const stalled = await pending;
    expect(stalled.body.length).toBe(1000);
    expect(stalled.error).toBeDefined();
  });
});

describe('hub stand-in: lying metadata', () => {
  it('says what it is told to in paths-info, tree and revision answers, and serves the true bytes', async () => {
    hub.lies.about('unet/model.safetensors', { lfsOid: '../../x', size: 'big', extra: [null, { path: 'nobody/asked' }] });
    hub.lies.revision('acme/sd', 42);
    const info = await rawRequest(`${hub.endpoint}/api/models/acme/sd/revision/main`);
    expect((JSON.parse(info.body.toString()) as { sha: unknown }).sha).toBe(42);
    const paths = await rawRequest(`${hub.endpoint}/api/models/acme/sd/paths-info/${commit}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ paths: ['unet/model.safetensors', 'config.json'] }),
    });
    const answer = JSON.parse(paths.body.toString()) as unknown[];
    expect(answer).toHaveLength(4);
    expect(answer[0]).toMatchObject({ path: 'unet/model.safetensors', size: 'big', lfs: { oid: '../../x', size: WEIGHTS.length } });
    expect(answer[1]).toMatchObject({ path: 'config.json', oid: gitBlobSha1Hex(CONFIG) });
    expect(answer.slice(2)).toEqual([null, { path: 'nobody/asked' }]);
    const tree = await rawRequest(`${hub.endpoint}/api/models/acme/sd/tree/${commit}/unet`);
    expect((JSON.parse(tree.body.toString()) as { path: string; size: unknown }[]).find((e) => e.path === 'unet/model.safetensors')?.size).toBe('big');
    expect((await rawRequest(await cdnUrl('unet/model.safetensors'))).body.length).toBe(WEIGHTS.length);
    hub.lies.about('unet/model.safetensors', { noLfs: true });
    const plain = JSON.parse((await rawRequest(`${hub.endpoint}/api/models/acme/sd/paths-info/${commit}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ paths: ['unet/model.safetensors'] }) })).body.toString()) as Record<string, unknown>[];
    expect(plain[0]).not.toHaveProperty('lfs');
    hub.lies.clear();
    expect((JSON.parse((await rawRequest(`${hub.endpoint}/api/models/acme/sd/revision/main`)).body.toString()) as { sha: unknown }).sha).toMatch(/^[0-9a-f]{40}$/);
  });
});

describe('makeSafetensors', () => {
  it('builds a file whose header and offsets account for every byte', () => {
    const file = makeSafetensors(1000, 3);
    const n = Number(file.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets?: [number, number]; dtype?: string }>;
    const ends = Object.entries(header)
      .filter(([k]) => k !== '__metadata__')
      .map(([, t]) => t.data_offsets?.[1] ?? 0);
    expect(8 + n + Math.max(...ends)).toBe(file.length);
    expect(makeSafetensors(1000, 3)).toEqual(file);
    expect(makeSafetensors(1000, 4)).not.toEqual(file);
  });
});
