/**
 * Issue 17: "for every entry whose sha256 is known before download (manifest, lock, Hub,
 * Civitai), mirrors are tried in order before the origin". Each way of knowing it reads from
 * the mirror and asks the origin for no byte; content not named by a sha256 before the download
 * (a small non-LFS Hub file, keyed by its git sha1; an on-demand request without a sha256, trusted
 * on first use) goes to its origin, and the mirror is not asked for it.
 */
import { copyFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from './support/cli.js';
import { startByteServer, type ByteServer } from './support/byte-server.js';
import { startCivitai, type CivitaiStandIn } from './support/civitai.js';
import { freePort, killAll, startRun, waitFor } from './support/daemon-harness.js';
import { rawRequest } from './support/http-get.js';
import { makeSafetensors } from './support/hub.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256, sha256 } from './support/models.js';
import { s3Env, useS3 } from './support/s3-fixture.js';

const BUCKET = 'mirror-sources';
const PREFIX = 'modelsync/';
const MIRROR = `s3://${BUCKET}/${PREFIX}`;
const CIVITAI_TOKEN = 'CIVITAItokenDoNotLeak0123456789';
const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET]);
let civitai: CivitaiStandIn;
let web: ByteServer;
let sb: Sandbox;

/** Files the https:// origin serves, by path. */
const webFiles: Record<string, Buffer> = {};

beforeAll(async () => {
  civitai = await startCivitai();
  civitai.tokens.add(CIVITAI_TOKEN);
});
afterAll(async () => {
  await civitai.close();
});
afterEach(async () => {
  await killAll();
});
beforeEach(async () => {
  sb = await sandbox(hub.endpoint);
  hub.resetStats();
  civitai.requests.length = 0;
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({
    ...s3Env(s3, sb.dir),
    CIVITAI_ENDPOINT: civitai.endpoint,
    CIVITAI_TOKEN,
    ...extra,
  });
}

async function seed(content: Buffer): Promise<string> {
  const hex = sha256(content);
  await s3.put(BUCKET, `${PREFIX}sha256/${hex}`, content);
  return hex;
}

/** Requests the mirror saw for a blob (HeadObject and GetObject). */
function asked(hex: string): number {
  return s3.requests.filter((q) => q.key === `${PREFIX}sha256/${hex}`).length;
}

interface Report {
  ok: boolean;
  bytesBySource: { origin: number; mirror: number; volume: number };
}

describe('what uses a mirror', () => {
  it('a sha256 from the manifest, the Hub, Civitai and the lock: read from the mirror, no byte from an origin', async () => {
    const hubModel = addModel(hub, 200_000);
    const pinned = makeSafetensors(150_000, 4242);
    const civ = makeSafetensors(120_000, 4343);
    webFiles['/pinned.safetensors'] = pinned;
    web = await startByteServer({ files: { ...webFiles } });
    try {
      civitai.add({ id: 771_001, modelId: 771_008, modelType: 'LORA', files: [{ name: 'mirrored-lora.safetensors', content: civ }] });
      for (const c of [hubModel.content, pinned, civ]) await seed(c);
      await sb.writeManifest(
        [
          { source: hubModel.uri, dest: 'checkpoints/hub.safetensors' },
          { source: `${web.url}/pinned.safetensors`, dest: 'checkpoints/pinned.safetensors', sha256: sha256(pinned) },
          { source: 'civitai://771001' },
        ],
        { mirrors: [MIRROR] },
      );
      const r = await runCli(['sync', '--json'], env());
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as Report).bytesBySource).toEqual({ origin: 0, mirror: hubModel.content.length + pinned.length + civ.length, volume: 0 });
      expect(hub.stats.bytesServed.get(hubModel.sha256) ?? 0).toBe(0);
      expect(web.bytesServed).toBe(0);
      // Civitai's API named the sha256; its download endpoint and storage were never asked.
      expect(civitai.requests.filter((q) => q.host === 'storage' || q.url.includes('/api/download/'))).toEqual([]);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/pinned.safetensors'))).toBe(sha256(pinned));
      expect(await fileSha256(path.join(sb.models, 'loras/mirrored-lora.safetensors'))).toBe(sha256(civ));

      // The lock: an entry the manifest names without a sha256, pinned by `modelsync lock`, reads
      // from the mirror on a node that has only the manifest and its lock.
      const learnt = makeSafetensors(130_000, 4444);
      webFiles['/learnt.safetensors'] = learnt;
      await web.close();
      web = await startByteServer({ files: { ...webFiles } });
      const entries = [{ source: `${web.url}/learnt.safetensors`, dest: 'checkpoints/learnt.safetensors', size: learnt.length }];
      await sb.writeManifest(entries, { mirrors: [MIRROR] });
      const lock = await runCli(['lock'], env());
      expect(lock.code, lock.stderr).toBe(0);
      await seed(learnt);
      const other = await sandbox(hub.endpoint);
      const node = sb;
      sb = other;
      await sb.writeManifest(entries, { mirrors: [MIRROR] });
      await copyFile(node.manifest.replace(/\.json$/, '.lock.json'), sb.manifest.replace(/\.json$/, '.lock.json'));
      const servedBefore = web.bytesServed;
      const s = await runCli(['sync', '--json'], env());
      expect(s.code, s.stderr).toBe(0);
      expect((JSON.parse(s.stdout) as Report).bytesBySource).toEqual({ origin: 0, mirror: learnt.length, volume: 0 });
      expect(web.bytesServed).toBe(servedBefore);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/learnt.safetensors'))).toBe(sha256(learnt));
    } finally {
      await web.close();
    }
  });

  it('a small non-LFS Hub file, keyed by its git sha1, goes to the Hub; the mirror is not asked for it', async () => {
    const small = Buffer.from('{"architectures": ["Test"]}\n');
    const repo = addModel(hub, 50_000, { extra: [{ path: 'config.json', content: small, lfs: false }] });
    // Even were it there, under the sha256 the download will find.
    await seed(small);
    await sb.writeManifest([{ source: repo.uri.replace(/model\.safetensors$/, 'config.json'), dest: 'configs/config.json' }], { mirrors: [MIRROR] });
    const r = await runCli(['sync', '--json'], env());
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Report).bytesBySource).toEqual({ origin: small.length, mirror: 0, volume: 0 });
    expect(asked(sha256(small))).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'configs/config.json'))).toBe(sha256(small));
  });

  it('on demand: a request naming its sha256 reads from the mirror; one without (trust on first use) goes to its origin, the mirror not asked', async () => {
    const named = makeSafetensors(140_000, 4646);
    const tofu = makeSafetensors(110_000, 4747);
    await s3.put(BUCKET, 'origin/named.safetensors', Buffer.alloc(named.length, 1));
    await s3.put(BUCKET, 'origin/tofu.safetensors', tofu);
    await seed(named);
    // Even were it there, under the sha256 the download will find.
    await seed(tofu);
    await sb.writeManifest([], { mirrors: [MIRROR], on_demand: { allow: [`s3://${BUCKET}/origin/*`], max_bytes: '10M' } });
    const d = startRun([], env(), await freePort());
    await waitFor('the control API', async () => (await d.get('/readyz'))?.status === 200);
    s3.requests.length = 0;
    const ask = async (model: Record<string, string>): Promise<number> => {
      const text = JSON.stringify({ models: [model] });
      const r = await rawRequest(`${d.controlUrl}/models?wait=60`, { method: 'POST', body: text, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) }, timeoutMs: 60_000 });
      return r.status;
    };
    // The origin object holds other bytes: only the mirror's copy can satisfy the named sha256.
    expect(await ask({ source: `s3://${BUCKET}/origin/named.safetensors`, dest: 'loras/named.safetensors', sha256: sha256(named) })).toBe(200);
    expect(await fileSha256(path.join(sb.models, 'loras/named.safetensors'))).toBe(sha256(named));
    expect(s3.gets('origin/named.safetensors')).toEqual([]);
    expect(await ask({ source: `s3://${BUCKET}/origin/tofu.safetensors`, dest: 'loras/tofu.safetensors' })).toBe(200);
    expect(await fileSha256(path.join(sb.models, 'loras/tofu.safetensors'))).toBe(sha256(tofu));
    expect(asked(sha256(tofu))).toBe(0);
    expect(s3.gets('origin/tofu.safetensors')).toHaveLength(1);
  });
});
