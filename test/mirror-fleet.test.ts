/**
 * A fleet without a shared volume (issue 17): four nodes, each with its own store and state
 * dir, one S3 server as the region's mirror, the Hub stand-in as the origin.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from './support/cli.js';
import { startByteServer } from './support/byte-server.js';
import { startProxy } from './support/connect-proxy.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256, type TestModel } from './support/models.js';
import { s3Env, useS3 } from './support/s3-fixture.js';
import { makeSelfSignedCert } from './support/tls-cert.js';

const BUCKET = 'fleet-region';
const PREFIX = 'modelsync/';
const MIRROR = `s3://${BUCKET}/${PREFIX}`;
const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET]);
const certDir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-fleet-tls-'));
const cert = makeSelfSignedCert(certDir);

afterAll(async () => {
  await rm(certDir, { recursive: true, force: true });
});

/** Polls `done` for a while; what it waits for is a precondition, never asserted on time. */
async function waitUntil(done: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !done(); i++) await sleep(25);
}

function env(sb: Sandbox, extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({ ...s3Env(s3, sb.dir), ...extra });
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

  it.skipIf(cert === undefined)('an https:// mirror over TLS through HTTPS_PROXY (a CONNECT tunnel), an s3:// one through HTTP_PROXY; NO_PROXY sends both direct', async () => {
    const a = addModel(hub, 120_000);
    const b = addModel(hub, 120_000);
    await s3.put(BUCKET, `${PREFIX}sha256/${a.sha256}`, a.content);
    const web = await startByteServer({ ...(cert === undefined ? {} : { tls: cert }), files: { [`/m/sha256/${b.sha256}`]: b.content } });
    const proxy = await startProxy();
    const tlsMirror = `${web.url.replace('http://', 'https://')}/m/`;
    const entries = [
      { source: a.uri, dest: 'checkpoints/a.safetensors' },
      { source: b.uri, dest: 'checkpoints/b.safetensors' },
    ];
    const proxied = { HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url, NODE_EXTRA_CA_CERTS: cert?.certPath ?? '' };
    try {
      const node = await sandbox(hub.endpoint);
      await node.writeManifest(entries, { mirrors: [MIRROR, tlsMirror] });
      hub.resetStats();
      const r = await runCli(['sync', '--json'], env(node, proxied));
      expect(r.code).toBe(0);
      expect((JSON.parse(r.stdout) as Report).bytesBySource).toEqual({ origin: 0, mirror: a.content.length + b.content.length, volume: 0 });
      expect(proxy.requests.some((q) => q.method === 'CONNECT' && q.target === `127.0.0.1:${web.port}`)).toBe(true);
      expect(proxy.requests.some((q) => q.target.startsWith(`${s3.endpoint}/${BUCKET}/${PREFIX}sha256/${a.sha256}`))).toBe(true);
      expect(await fileSha256(path.join(node.models, 'checkpoints/b.safetensors'))).toBe(b.sha256);

      const direct = await sandbox(hub.endpoint);
      await direct.writeManifest(entries, { mirrors: [MIRROR, tlsMirror] });
      const seen = proxy.requests.length;
      const d = await runCli(['sync', '--json'], env(direct, { ...proxied, NO_PROXY: '127.0.0.1' }));
      expect(d.code).toBe(0);
      expect((JSON.parse(d.stdout) as Report).bytesBySource).toEqual({ origin: 0, mirror: a.content.length + b.content.length, volume: 0 });
      expect(proxy.requests.slice(seen)).toEqual([]);
      expect(await fileSha256(path.join(direct.models, 'checkpoints/a.safetensors'))).toBe(a.sha256);
    } finally {
      await proxy.close();
      await web.close();
    }
  });

  it('two nodes on one shared volume with a mirror: the lease holder reads each blob from the mirror once, the other takes its commit', async () => {
    const models: TestModel[] = [addModel(hub, 2 * 1024 * 1024), addModel(hub, 300_000)];
    for (const m of models) await s3.put(BUCKET, `${PREFIX}sha256/${m.sha256}`, m.content);
    const entries = models.map((m, i) => ({ source: m.uri, dest: `checkpoints/m${i}.safetensors` }));
    const total = models.reduce((n, m) => n + m.content.length, 0);
    const nodes = await Promise.all([0, 1].map(() => sandbox(hub.endpoint)));
    const shared = path.join(nodes[0]?.dir ?? '', 'shared-store');
    for (const n of nodes) await n.writeManifest(entries, { mirrors: [MIRROR] });
    hub.resetStats();
    s3.requests.length = 0;
    // The first node's first range waits until the second has asked the Hub all the first one
    // asked (the same manifest): the second then meets the first's lease, not its finished blob.
    let held = false;
    let release = (): void => undefined;
    const released = new Promise<void>((r) => (release = r));
    s3.beforeGet = async (_key, n) => {
      if (n !== 1 || held) return;
      held = true;
      await released;
    };
    try {
      const run = (n: Sandbox): ReturnType<typeof runCli> => runCli(['sync', '--json', '--chunk-size', '256K'], env(n, { MODELSYNC_STORE_DIR: shared }));
      const first = run(nodes[0] as Sandbox);
      await waitUntil(() => held);
      const asked = hub.stats.apiCalls;
      const second = run(nodes[1] as Sandbox);
      await waitUntil(() => hub.stats.apiCalls >= 2 * asked);
      release();
      const runs = await Promise.all([first, second]);
      const reports = runs.map((r) => {
        expect(r.code, r.stderr).toBe(0);
        return JSON.parse(r.stdout) as Report;
      });
      // Each blob came to one node from the mirror and to the other from the volume; none from the origin.
      expect(held).toBe(true);
      expect(reports.reduce((n, r) => n + r.bytesBySource.volume, 0)).toBe(total);
      expect(reports.reduce((n, r) => n + r.bytesBySource.mirror, 0)).toBeGreaterThanOrEqual(total);
      expect(reports.every((r) => r.bytesBySource.origin === 0)).toBe(true);
      for (const m of models) {
        const key = `${PREFIX}sha256/${m.sha256}`;
        // One locate per blob over both nodes: only the lease holder asks the mirror.
        expect(s3.requests.filter((q) => q.method === 'HEAD' && q.key === key)).toHaveLength(1);
        expect(hub.stats.bytesServed.get(m.sha256) ?? 0).toBe(0);
      }
      for (const n of nodes) for (const [i, m] of models.entries()) expect(await fileSha256(path.join(n.models, `checkpoints/m${i}.safetensors`))).toBe(m.sha256);
    } finally {
      release();
      s3.beforeGet = undefined;
    }
  });
});
