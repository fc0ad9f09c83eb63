/**
 * A fleet without a shared volume (issue 17): four nodes, each with its own store and state
 * dir, one S3 server as the region's mirror, the Hub stand-in as the origin.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from './support/cli.js';
import { startByteServer } from './support/byte-server.js';
import { startProxy } from './support/connect-proxy.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256, type TestModel } from './support/models.js';
import { startS3, type S3Fixture } from './support/s3-fixture.js';

const BUCKET = 'fleet-region';
const PREFIX = 'modelsync/';
const MIRROR = `s3://${BUCKET}/${PREFIX}`;
const { hub, sandbox } = await useHubSandbox();
let s3: S3Fixture;

beforeAll(async () => {
  s3 = await startS3([BUCKET]);
});
afterAll(async () => {
  await s3.close();
});

function env(sb: Sandbox, extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({
    AWS_ENDPOINT_URL_S3: s3.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: path.join(sb.dir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(sb.dir, 'no-aws-credentials'),
    ...extra,
  });
}

interface Report {
  ok: boolean;
  bytesBySource: { origin: number; mirror: number; volume: number };
  mirrorWrite?: { uploaded: number; present: number; failed: number };
}

describe('a fleet of four nodes, separate stores, one S3 mirror', () => {
  it('the origin serves each blob once; every other copy comes from the mirror; every file verified', async () => {
    const models: TestModel[] = [addModel(hub, 9 * 1024 * 1024), addModel(hub, 300_000), addModel(hub, 40_000)];
    const entries = models.flatMap((m, i) => [
      { source: m.uri, dest: `checkpoints/m${i}.safetensors` },
      // The same content twice on a node: still one blob, fetched once.
      ...(i === 1 ? [{ source: m.uri, dest: `loras/again${i}.safetensors` }] : []),
    ]);
    const total = models.reduce((n, m) => n + m.content.length, 0);
    hub.resetStats();
    s3.requests.length = 0;
    const nodes = await Promise.all([0, 1, 2, 3].map(() => sandbox(hub.endpoint)));
    for (const n of nodes) await n.writeManifest(entries, { mirrors: [MIRROR], mirror_write: MIRROR });

    // The first node of the region pays the origin and writes back.
    const first = await runCli(['sync', '--json', '--chunk-size', '4M'], env(nodes[0] as Sandbox));
    expect(first.code).toBe(0);
    const r0 = JSON.parse(first.stdout) as Report;
    expect(r0.bytesBySource).toEqual({ origin: total, mirror: 0, volume: 0 });
    expect(r0.mirrorWrite).toMatchObject({ uploaded: 3, failed: 0 });

    // One copy of each (work stealing at the end of a file may ask for its last piece twice).
    for (const m of models) expect(hub.stats.bytesServed.get(m.sha256) ?? 0).toBeGreaterThanOrEqual(m.content.length);
    for (const m of models) expect(hub.stats.bytesServed.get(m.sha256) ?? 0).toBeLessThan(2 * m.content.length);
    hub.resetStats();

    // The other three at once: all from the mirror, nothing from the origin, nothing written back.
    const rest = await Promise.all(nodes.slice(1).map((n) => runCli(['sync', '--json', '--chunk-size', '4M'], env(n))));
    for (const r of rest) {
      expect(r.code).toBe(0);
      const rep = JSON.parse(r.stdout) as Report;
      expect(rep.bytesBySource).toEqual({ origin: 0, mirror: total, volume: 0 });
      expect(rep.mirrorWrite).toMatchObject({ uploaded: 0, present: 0, failed: 0 });
    }
    for (const m of models) expect(hub.stats.bytesServed.get(m.sha256) ?? 0).toBe(0);
    for (const n of nodes) {
      for (const [i, m] of models.entries()) expect(await fileSha256(path.join(n.models, `checkpoints/m${i}.safetensors`))).toBe(m.sha256);
      expect(await fileSha256(path.join(n.models, 'loras/again1.safetensors'))).toBe(models[1]?.sha256);
    }
    // Each blob uploaded once (the 9 MiB one as a multipart upload: create, 2 parts, complete).
    const puts = (m: TestModel): number => s3.requests.filter((q) => (q.method === 'PUT' || q.method === 'POST') && q.key === `${PREFIX}sha256/${m.sha256}`).length;
    expect(models.map(puts)).toEqual([4, 1, 1]);
  });

  it('mirror reads go through the proxy settings: an https:// mirror and an s3:// one via HTTP_PROXY', async () => {
    const a = addModel(hub, 120_000);
    const b = addModel(hub, 120_000);
    await s3.put(BUCKET, `${PREFIX}sha256/${a.sha256}`, a.content);
    const web = await startByteServer({ files: { [`/m/sha256/${b.sha256}`]: b.content } });
    const proxy = await startProxy();
    try {
      const node = await sandbox(hub.endpoint);
      await node.writeManifest(
        [
          { source: a.uri, dest: 'checkpoints/a.safetensors' },
          { source: b.uri, dest: 'checkpoints/b.safetensors' },
        ],
        { mirrors: [MIRROR, `${web.url}/m/`] },
      );
      hub.resetStats();
      const r = await runCli(['sync', '--json'], env(node, { HTTP_PROXY: proxy.url }));
      expect(r.code).toBe(0);
      expect((JSON.parse(r.stdout) as Report).bytesBySource).toEqual({ origin: 0, mirror: a.content.length + b.content.length, volume: 0 });
      const targets = proxy.requests.map((q) => q.target);
      expect(targets.some((t) => t.startsWith(`${s3.endpoint}/${BUCKET}/${PREFIX}sha256/${a.sha256}`))).toBe(true);
      expect(targets.some((t) => t === `${web.url}/m/sha256/${b.sha256}`)).toBe(true);
      expect(await fileSha256(path.join(node.models, 'checkpoints/b.safetensors'))).toBe(b.sha256);
    } finally {
      await proxy.close();
      await web.close();
    }
  });
});
