import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { blobPath } from '../src/store/layout.js';
import { runSync } from '../src/sync/engine.js';
import { warmSync } from '../src/sync/warm.js';
import { startByteServer, type ByteServer } from './support/byte-server.js';
import { startCivitai, type CivitaiStandIn } from './support/civitai.js';
import { runCli, sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, exists, fileSha256, sha256, type TestModel } from './support/models.js';
import { onDemandRig, type Rig } from './support/on-demand-rig.js';
import { makeSafetensors } from './support/safetensors.js';

const { hub } = await useHubSandbox();
let rig: Rig | undefined;

afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const policy = (maxBytes: number | string, allow = '"hf://*"', extra = ''): string => `on_demand:\n  allow: [${allow}]\n  max_bytes: ${maxBytes}\n${extra}`;
const manifestYaml = (onDemand: string, models = '[]'): string => `version: 1\nmodels: ${models}\n${onDemand}`;
const req = (m: TestModel, dest: string): { source: string; dest: string } => ({ source: m.uri, dest });
const blobKey = (m: TestModel): string => `sha256-${m.sha256}`;

describe('the on-demand layer', () => {
  it('fetches a request verified, publishes it, and records it in the state DB and the reference record', async () => {
    const m = addModel(hub, 60_000);
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M')));
    const snap = await rig.ensure([req(m, 'loras/a.safetensors')]);
    expect(snap).toMatchObject({ done: true, ok: true, models: [{ dest: 'loras/a.safetensors', source: `hf://${m.repo}@main/${m.path}`, state: 'ready', total: m.content.length, bytes: m.content.length }] });
    expect(await fileSha256(path.join(rig.sb.models, 'loras/a.safetensors'))).toBe(m.sha256);
    expect(rig.service.layer.table.row('loras/a.safetensors')).toMatchObject({ state: 'ready', size: m.content.length, key: { algo: 'sha256', hex: m.sha256 } });
    const refs = await rig.refs();
    expect(refs.keys).toContain(blobKey(m));
    expect(refs.onDemand).toEqual([blobKey(m)]);
    const types = rig.events.filter((e) => e.model.dest === 'loras/a.safetensors').map((e) => e.type);
    expect(types[0]).toBe('queued');
    expect(types).toContain('downloading');
    expect(types.at(-1)).toBe('ready');
    // Asked again: ready at once, from stat and the state DB; nothing asked of the Hub.
    hub.resetStats();
    const job = await rig.service.submit([req(m, 'loras/a.safetensors')]);
    expect(job.snapshot()).toMatchObject({ done: true, ok: true });
    expect(hub.stats.requests).toHaveLength(0);
    expect(rig.service.status()).toMatchObject({ enabled: true, maxBytes: 10 * 2 ** 20, bytesUsed: m.content.length, entries: 1, evictions: 0, jobsRunning: 0 });
  });

  it('two concurrent requests for one blob fetch it once', async () => {
    const m = addModel(hub, 400_000);
    hub.setFaults(m.sha256, { bytesPerSecond: 2_000_000 });
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M')));
    const [a, b] = await Promise.all([rig.ensure([req(m, 'loras/one.safetensors')]), rig.ensure([req(m, 'loras/two.safetensors')])]);
    expect(a?.ok && b?.ok).toBe(true);
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length);
    const one = await stat(path.join(rig.sb.models, 'loras/one.safetensors'));
    const two = await stat(path.join(rig.sb.models, 'loras/two.safetensors'));
    expect(one.ino).toBe(two.ino);
    // One blob, counted once.
    expect(rig.service.status().bytesUsed).toBe(m.content.length);
  });

  it('evicts the least recently used entry when max_bytes would be exceeded: unpublished, unreferenced, its blob gone', async () => {
    const [a, b, c] = [addModel(hub, 100_000), addModel(hub, 100_000), addModel(hub, 100_000)];
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy(250_000)));
    expect((await rig.ensure([req(a, 'loras/a.safetensors')])).ok).toBe(true);
    expect((await rig.ensure([req(b, 'loras/b.safetensors')])).ok).toBe(true);
    // a is used again: b is now the least recently used.
    expect((await rig.ensure([req(a, 'loras/a.safetensors')])).ok).toBe(true);
    expect((await rig.ensure([req(c, 'loras/c.safetensors')])).ok).toBe(true);
    expect(await exists(path.join(rig.sb.models, 'loras/b.safetensors'))).toBe(false);
    expect(await exists(path.join(rig.sb.models, 'loras/a.safetensors'))).toBe(true);
    expect(rig.events.filter((e) => e.type === 'evicted').map((e) => e.model.dest)).toEqual(['loras/b.safetensors']);
    expect(rig.events.find((e) => e.type === 'evicted')?.job).toBeUndefined();
    const refs = await rig.refs();
    expect(refs.keys).not.toContain(blobKey(b));
    expect(refs.keys).toEqual(expect.arrayContaining([blobKey(a), blobKey(c)]));
    // Nothing else named it: its bytes left the disk with it.
    expect(await exists(blobPath(rig.ctx.store, { algo: 'sha256', hex: b.sha256 }))).toBe(false);
    expect(rig.service.status()).toMatchObject({ bytesUsed: a.content.length + c.content.length, entries: 2, evictions: 1 });
  });

  it('never evicts an entry a running prompt pins; refuses what cannot fit, naming max_bytes; evicts again once released', async () => {
    const [a, b, c] = [addModel(hub, 100_000), addModel(hub, 100_000), addModel(hub, 100_000)];
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy(250_000)));
    const prompt = rig.service.holder('prompt-1');
    expect((await rig.ensure([req(a, 'loras/a.safetensors'), req(b, 'loras/b.safetensors')], prompt)).ok).toBe(true);
    expect(rig.service.status().pinned).toBe(2);
    const refused = await rig.ensure([req(c, 'loras/c.safetensors')]);
    expect(refused.ok).toBe(false);
    expect(refused.models[0]).toMatchObject({ state: 'failed', error: { code: 'E_POLICY' } });
    expect(refused.models[0]?.error?.message).toContain('on_demand.max_bytes');
    expect(await exists(path.join(rig.sb.models, 'loras/a.safetensors'))).toBe(true);
    expect(await exists(path.join(rig.sb.models, 'loras/b.safetensors'))).toBe(true);
    expect(rig.service.layer.table.row('loras/c.safetensors')).toBeUndefined();
    prompt.release();
    prompt.release();
    expect(rig.service.status().pinned).toBe(0);
    expect((await rig.ensure([req(c, 'loras/c.safetensors')])).ok).toBe(true);
    expect(rig.events.filter((e) => e.type === 'evicted')).toHaveLength(1);
  });

  it('refuses a request bigger than max_bytes before a byte of it moves', async () => {
    const m = addModel(hub, 300_000);
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy(200_000)));
    hub.resetStats();
    const snap = await rig.ensure([req(m, 'loras/big.safetensors')]);
    expect(snap.models[0]).toMatchObject({ state: 'failed', error: { code: 'E_POLICY' } });
    expect(snap.models[0]?.error?.message).toMatch(/more than on_demand\.max_bytes/);
    expect(hub.stats.bytesServed.get(m.sha256) ?? 0).toBe(0);
  });

  it('content a manifest entry also needs is not the layer\'s to count or evict', async () => {
    const base = addModel(hub, 150_000);
    const other = addModel(hub, 150_000);
    const models = `[{source: "${base.uri}", dest: "checkpoints/base.safetensors"}]`;
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy(200_000), models));
    expect((await runSync(rig.ctx, rig.manifest)).ok).toBe(true);
    // The manifest's own dest, asked for on demand: ready, from the manifest's record.
    const own = await rig.ensure([{ source: `hf://${base.repo}@main/${base.path}`, dest: 'checkpoints/base.safetensors' }]);
    expect(own.ok).toBe(true);
    // Its content at a second dest: in the layer, not counted.
    expect((await rig.ensure([req(base, 'loras/base-too.safetensors')])).ok).toBe(true);
    expect(rig.service.status().bytesUsed).toBe(0);
    expect((await rig.ensure([req(other, 'loras/other.safetensors')])).ok).toBe(true);
    expect(rig.service.status().bytesUsed).toBe(other.content.length);
    expect(rig.events.filter((e) => e.type === 'evicted')).toHaveLength(0);
    expect(await fileSha256(path.join(rig.sb.models, 'checkpoints/base.safetensors'))).toBe(base.sha256);
    // The on-demand link to the manifest's blob moved its ctime: the manifest's dest is still a
    // warm start's (stat + state DB, no network).
    expect((await warmSync(rig.ctx.config, rig.manifest)).report?.ok).toBe(true);
  });

  it('a full manifest sync rewrites the reference record with the layer\'s keys kept', async () => {
    const od = addModel(hub, 40_000);
    const man = addModel(hub, 40_000);
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M'), `[{source: "${man.uri}", dest: "checkpoints/m.safetensors"}]`));
    expect((await rig.ensure([req(od, 'loras/od.safetensors')])).ok).toBe(true);
    const report = await runSync(rig.ctx, rig.manifest);
    expect(report.ok).toBe(true);
    const refs = await rig.refs();
    expect(refs.keys).toEqual([blobKey(man), blobKey(od)].sort());
    expect(refs.onDemand).toEqual([blobKey(od)]);
    // And once more, all present (the complete sync's non-merging rewrite).
    await runSync(rig.ctx, rig.manifest);
    expect((await rig.refs()).keys).toContain(blobKey(od));
  });

  it('gc on a shared store, run by another node, keeps the layer\'s blobs and removes what nobody references', async () => {
    const od = addModel(hub, 40_000);
    const man = addModel(hub, 40_000);
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M'), `[{source: "${man.uri}", dest: "checkpoints/m.safetensors"}]`));
    expect((await runSync(rig.ctx, rig.manifest)).ok).toBe(true);
    expect((await rig.ensure([req(od, 'loras/od.safetensors')])).ok).toBe(true);
    // The manifest no longer names its entry: unpublished, its blob referenced by nothing.
    rig.setManifest(manifestYaml(policy('10M')));
    expect((await runSync(rig.ctx, rig.manifest)).ok).toBe(true);
    const other = await sandbox(hub.endpoint);
    try {
      const gc = await runCli(['gc', '--grace-period', '0', '--store-dir', rig.ctx.store.root], other.env());
      expect(gc.code, gc.stderr).toBe(0);
    } finally {
      await other.cleanup();
    }
    expect(await exists(blobPath(rig.ctx.store, { algo: 'sha256', hex: man.sha256 }))).toBe(false);
    expect(await exists(blobPath(rig.ctx.store, { algo: 'sha256', hex: od.sha256 }))).toBe(true);
    expect(await fileSha256(path.join(rig.sb.models, 'loras/od.safetensors'))).toBe(od.sha256);
  });

  it('an eviction removes only what modelsync published: a file changed since is left alone', async () => {
    const [a, b] = [addModel(hub, 100_000), addModel(hub, 100_000)];
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy(150_000)));
    expect((await rig.ensure([req(a, 'loras/a.safetensors')])).ok).toBe(true);
    const file = path.join(rig.sb.models, 'loras/a.safetensors');
    // The user replaces it with a file of their own (a new inode at the same name).
    await writeFile(`${file}.mine`, 'my own bytes');
    await import('node:fs/promises').then((fs) => fs.rename(`${file}.mine`, file));
    expect((await rig.ensure([req(b, 'loras/b.safetensors')])).ok).toBe(true);
    expect(await readFile(file, 'utf8')).toBe('my own bytes');
  });

  it('a file modelsync did not place at the dest is left alone: ready, unmanaged, never replaced', async () => {
    const m = addModel(hub, 30_000);
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M')));
    const file = path.join(rig.sb.models, 'loras/mine.safetensors');
    await import('node:fs/promises').then((fs) => fs.mkdir(path.dirname(file), { recursive: true }));
    await writeFile(file, 'placed by hand');
    hub.resetStats();
    const snap = await rig.ensure([req(m, 'loras/mine.safetensors')]);
    expect(snap.models[0]).toMatchObject({ state: 'ready', unmanaged: true });
    expect(await readFile(file, 'utf8')).toBe('placed by hand');
    expect(hub.stats.requests).toHaveLength(0);
  });

  it('a request for other content at a layer dest replaces it (the old one is evicted first), unless a prompt pins it', async () => {
    const [a, b] = [addModel(hub, 50_000), addModel(hub, 50_000)];
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M')));
    const prompt = rig.service.holder('p');
    expect((await rig.ensure([req(a, 'loras/x.safetensors')], prompt)).ok).toBe(true);
    const busy = await rig.ensure([req(b, 'loras/x.safetensors')]);
    expect(busy.models[0]).toMatchObject({ state: 'failed', error: { code: 'E_POLICY' } });
    expect(await fileSha256(path.join(rig.sb.models, 'loras/x.safetensors'))).toBe(a.sha256);
    prompt.release();
    expect((await rig.ensure([req(b, 'loras/x.safetensors')])).ok).toBe(true);
    expect(await fileSha256(path.join(rig.sb.models, 'loras/x.safetensors'))).toBe(b.sha256);
    expect(rig.service.status()).toMatchObject({ entries: 1, bytesUsed: b.content.length });
  });

  it('refuses at submit what the policy or the validators refuse: nothing starts', async () => {
    const m = addModel(hub, 10_000);
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M', '"hf://someone-else/*"')));
    await expect(rig.service.submit([req(m, 'loras/a.safetensors')])).rejects.toMatchObject({ code: 'E_POLICY', entry: 0, dest: 'loras/a.safetensors' });
    await expect(rig.service.submit([req(m, '../a.safetensors')])).rejects.toMatchObject({ code: 'E_MANIFEST' });
    rig.setManifest('version: 1\nmodels: []\n');
    await expect(rig.service.submit([req(m, 'loras/a.safetensors')])).rejects.toMatchObject({ code: 'E_POLICY' });
    expect(rig.service.status()).toMatchObject({ enabled: false, entries: 0 });
    expect(rig.service.requestCounts).toEqual({ ok: 0, refused: 3 });
  });
});

describe('on-demand requests without a sha256 (trust on first use)', () => {
  let bytes: ByteServer;
  const body = makeSafetensors(80_000, 4242);
  beforeAll(async () => {
    bytes = await startByteServer({ files: { '/m/lora.safetensors': body, '/m/other.safetensors': makeSafetensors(20_000, 7) } });
  });
  afterAll(async () => {
    await bytes.close();
  });

  it('hashes it while downloading (one stream, no ranges), and the first download decides later requests', async () => {
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M', `"${bytes.url}/m/*"`)));
    bytes.requests.length = 0;
    const url = `${bytes.url}/m/lora.safetensors`;
    const snap = await rig.ensure([{ name: 'lora.safetensors', url, directory: 'loras' }]);
    expect(snap.ok).toBe(true);
    expect(await fileSha256(path.join(rig.sb.models, 'loras/lora.safetensors'))).toBe(sha256(body));
    expect(rig.service.layer.table.row('loras/lora.safetensors')?.key).toEqual({ algo: 'sha256', hex: sha256(body) });
    // The size was asked first (one byte), then one whole stream.
    const gets = bytes.requests.filter((r) => r.path === '/m/lora.safetensors');
    expect(gets.map((r) => r.range)).toEqual(['bytes=0-0', undefined]);
    const refs = await rig.refs();
    expect(refs.onDemand).toEqual([`sha256-${sha256(body)}`]);
    // Another dest for the same URL: the content learnt the first time, no download.
    bytes.requests.length = 0;
    expect((await rig.ensure([{ name: 'again.safetensors', url, directory: 'loras' }])).ok).toBe(true);
    expect(bytes.requests.filter((r) => r.range === undefined)).toHaveLength(0);
    expect((await stat(path.join(rig.sb.models, 'loras/again.safetensors'))).ino).toBe((await stat(path.join(rig.sb.models, 'loras/lora.safetensors'))).ino);
    // The second link moved the inode's ctime; the first dest is still ready at once, not re-checked.
    const first = await rig.service.submit([{ name: 'lora.safetensors', url, directory: 'loras' }]);
    expect(first.snapshot()).toMatchObject({ done: true, ok: true });
    expect(bytes.requests).toHaveLength(0);
  });

  it('a given sha256 is checked like a manifest entry\'s: bytes that do not match never reach a final path', async () => {
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M', `"${bytes.url}/m/*"`)));
    const snap = await rig.ensure([{ source: `${bytes.url}/m/other.safetensors`, dest: 'loras/o.safetensors', sha256: 'b'.repeat(64) }]);
    expect(snap.models[0]).toMatchObject({ state: 'failed', error: { code: 'E_HASH_MISMATCH' } });
    expect(await exists(path.join(rig.sb.models, 'loras/o.safetensors'))).toBe(false);
    expect(rig.service.layer.table.row('loras/o.safetensors')).toBeUndefined();
    expect((await rig.refs()).keys).not.toContain(`sha256-${'b'.repeat(64)}`);
  });

  it('require_sha256: a request without one is refused, naming the setting', async () => {
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M', `"${bytes.url}/m/*"`, '  require_sha256: true\n')));
    await expect(rig.service.submit([{ source: `${bytes.url}/m/lora.safetensors`, dest: 'loras/l.safetensors' }])).rejects.toMatchObject({ code: 'E_POLICY', message: expect.stringContaining('require_sha256') });
  });
});

describe('on-demand Civitai requests', () => {
  let civitai: CivitaiStandIn;
  let nextId = 300_000;
  beforeAll(async () => {
    civitai = await startCivitai();
  });
  afterAll(async () => {
    await civitai.close();
  });
  const version = (modelType: string, name: string): { id: number; content: Buffer } => {
    const id = ++nextId;
    const content = makeSafetensors(40_000, id);
    civitai.add({ id, modelId: id + 7, modelType, files: [{ name, content }] });
    return { id, content };
  };

  it('any form of a version is matched as its civitai.com download URL; without a dest it is placed as the manifest places one', async () => {
    const lora = version('LORA', 'style.safetensors');
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M', '"https://civitai.com/api/download/models/*"')), { CIVITAI_ENDPOINT: civitai.endpoint });
    // The gate's shape for a Civitai URL in a loader input: no dest, Civitai's file name decides.
    const snap = await rig.ensure([{ source: `civitai://${lora.id}` }]);
    expect(snap).toMatchObject({ ok: true, models: [{ dest: 'loras/style.safetensors', source: `https://civitai.com/api/download/models/${lora.id}`, state: 'ready' }] });
    expect(await fileSha256(path.join(rig.sb.models, 'loras/style.safetensors'))).toBe(sha256(lora.content));
    // The site's own URL and an AIR name the same version: ready at once.
    for (const source of [`https://civitai.com/api/download/models/${lora.id}`, `urn:air:sdxl:lora:civitai:${lora.id + 7}@${lora.id}`]) {
      const again = await rig.service.submit([{ source, dest: 'loras/style.safetensors' }]);
      expect(again.snapshot(), source).toMatchObject({ done: true, ok: true });
    }
  });

  it('a workflow model whose url is a Civitai download URL: that version, fetched from Civitai, published at directory/name', async () => {
    const lora = version('LORA', 'from-civitai.safetensors');
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M', '"https://civitai.com/api/download/models/*"')), { CIVITAI_ENDPOINT: civitai.endpoint });
    const snap = await rig.ensure([{ name: 'my-name.safetensors', url: `https://civitai.com/api/download/models/${lora.id}`, directory: 'loras' }]);
    expect(snap).toMatchObject({ ok: true, models: [{ dest: 'loras/my-name.safetensors', source: `https://civitai.com/api/download/models/${lora.id}`, state: 'ready' }] });
    expect(await fileSha256(path.join(rig.sb.models, 'loras/my-name.safetensors'))).toBe(sha256(lora.content));
    expect(civitai.requests.some((r) => r.host === 'storage')).toBe(true);
  });

  it('a glob that does not allow civitai.com refuses every form of a version; civitai:// globs work too', async () => {
    const v = version('Checkpoint', 'base.safetensors');
    rig = await onDemandRig(hub.endpoint, manifestYaml(policy('10M', '"https://example.org/*"')), { CIVITAI_ENDPOINT: civitai.endpoint });
    for (const source of [`civitai://${v.id}`, `https://civitai.com/api/download/models/${v.id}`, `https://civitai.green/api/download/models/${v.id}`, `urn:air:sdxl:checkpoint:civitai:${v.id + 7}@${v.id}`, `https://civitai.com/models/${v.id + 7}?modelVersionId=${v.id}`]) {
      await expect(rig.service.submit([{ source, dest: 'checkpoints/base.safetensors' }]), source).rejects.toMatchObject({ code: 'E_POLICY' });
    }
    rig.setManifest(manifestYaml(policy('10M', `"civitai://${v.id}"`)));
    expect((await rig.ensure([{ source: `https://civitai.com/api/download/models/${v.id}`, dest: 'checkpoints/base.safetensors' }])).ok).toBe(true);
  });
});

