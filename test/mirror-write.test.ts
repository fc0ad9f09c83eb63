import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from './support/cli.js';
import { freePort, killAll, readRecord, startRun, STUB, waitFor } from './support/daemon-harness.js';
import { parsePrometheus } from './support/prometheus.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { logRecords } from './support/json-lines.js';
import { addModel, fileSha256, type TestModel } from './support/models.js';
import { s3Env, useS3 } from './support/s3-fixture.js';

const BUCKET = 'fleet-write';
const DOWN = 'fleet-write-down';
const PREFIX = 'modelsync/';
const MIRROR = `s3://${BUCKET}/${PREFIX}`;
const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET, DOWN]);

afterEach(async () => {
  await killAll();
});
beforeEach(() => {
  hub.resetStats();
});

function env(sb: Sandbox, extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({
    ...s3Env(s3, sb.dir),
    MODELSYNC_RETRY_ATTEMPTS: '2',
    ...extra,
  });
}

function objectKey(m: TestModel): string {
  return `${PREFIX}sha256/${m.sha256}`;
}

function writes(m: TestModel): number {
  return s3.requests.filter((q) => (q.method === 'PUT' || q.method === 'POST') && q.key === objectKey(m)).length;
}

describe('mirror_write: write-back after publish', () => {
  it('a node that fetched from the origin uploads the blob (multipart when large); the next node reads it from the mirror', async () => {
    const small = addModel(hub, 200_000);
    const big = addModel(hub, 17 * 1024 * 1024);
    const entries = [
      { source: small.uri, dest: 'checkpoints/small.safetensors' },
      { source: big.uri, dest: 'checkpoints/big.safetensors' },
    ];
    const a = await sandbox(hub.endpoint);
    await a.writeManifest(entries, { mirrors: [MIRROR], mirror_write: MIRROR });
    const ra = await runCli(['sync', '--json'], env(a));
    expect(ra.code).toBe(0);
    const report = JSON.parse(ra.stdout) as { bytesBySource: Record<string, number>; mirrorWrite: Record<string, number> };
    expect(report.bytesBySource).toEqual({ origin: small.content.length + big.content.length, mirror: 0, volume: 0 });
    expect(report.mirrorWrite).toMatchObject({ uploaded: 2, present: 0, failed: 0, bytes: small.content.length + big.content.length });
    expect(writes(small)).toBe(1);
    // 17 MiB in 8 MiB parts: create, three parts, complete.
    expect(writes(big)).toBe(5);

    hub.resetStats();
    const b = await sandbox(hub.endpoint);
    await b.writeManifest(entries, { mirrors: [MIRROR], mirror_write: MIRROR });
    const rb = await runCli(['sync', '--json'], env(b));
    expect(rb.code).toBe(0);
    const rep = JSON.parse(rb.stdout) as { bytesBySource: Record<string, number>; mirrorWrite: Record<string, number> };
    expect(rep.bytesBySource).toEqual({ origin: 0, mirror: small.content.length + big.content.length, volume: 0 });
    // Read from the mirror: nothing to write back.
    expect(rep.mirrorWrite).toMatchObject({ uploaded: 0, present: 0, failed: 0 });
    expect(hub.stats.bytesServed.get(small.sha256) ?? 0).toBe(0);
    expect(hub.stats.bytesServed.get(big.sha256) ?? 0).toBe(0);
    expect(await fileSha256(path.join(b.models, 'checkpoints/big.safetensors'))).toBe(big.sha256);
    expect(await fileSha256(path.join(b.models, 'checkpoints/small.safetensors'))).toBe(small.sha256);
  });

  it('uploads only if absent: HeadObject first', async () => {
    const m = addModel(hub, 100_000);
    await s3.put(BUCKET, objectKey(m), m.content);
    const a = await sandbox(hub.endpoint);
    // Not read from (not in mirrors), only written to: the node fetches from the origin.
    await a.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirror_write: MIRROR });
    const r = await runCli(['sync', '--json'], env(a));
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ uploaded: 0, present: 1, failed: 0 });
    expect(writes(m)).toBe(0);
    expect(s3.requests.filter((q) => q.method === 'HEAD' && q.key === objectKey(m))).toHaveLength(1);
  });

  it('an object of another size under the blob\'s name (a torn or foreign upload) does not count as present: it is replaced', async () => {
    const m = addModel(hub, 100_000);
    await s3.put(BUCKET, objectKey(m), m.content.subarray(0, 1000));
    const a = await sandbox(hub.endpoint);
    await a.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirror_write: MIRROR });
    const r = await runCli(['sync', '--json'], env(a));
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ uploaded: 1, present: 0, failed: 0 });
    expect(writes(m)).toBe(1);
    // The next node reads the whole blob from the mirror.
    hub.resetStats();
    const b = await sandbox(hub.endpoint);
    await b.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [MIRROR] });
    const rb = await runCli(['sync', '--json'], env(b));
    expect(rb.code).toBe(0);
    expect((JSON.parse(rb.stdout) as { bytesBySource: Record<string, number> }).bytesBySource).toEqual({ origin: 0, mirror: m.content.length, volume: 0 });
  });

  it('a failed write-back is a warning and a count, never a failed sync', async () => {
    const m = addModel(hub, 100_000);
    const a = await sandbox(hub.endpoint);
    await a.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirror_write: `s3://${DOWN}/${PREFIX}` });
    s3.failBucket.set(DOWN, { status: 503, code: 'ServiceUnavailable' });
    const r = await runCli(['sync', '--json'], env(a));
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ uploaded: 0, present: 0, failed: 1 });
    expect(await fileSha256(path.join(a.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
    expect(logRecords(r.stderr).some((l) => l.level === 40 && l.code === 'E_S3' && l.mirror === `s3://${DOWN}/${PREFIX}`)).toBe(true);

    // Refused writes (a node without s3:PutObject), with reads allowed.
    const m2 = addModel(hub, 100_000);
    s3.failBucket.clear();
    s3.fail = (q) => (q.method === 'PUT' || q.method === 'POST' ? { status: 403, code: 'AccessDenied' } : undefined);
    await a.writeManifest([{ source: m2.uri, dest: 'checkpoints/m2.safetensors' }], { mirror_write: MIRROR });
    const r2 = await runCli(['sync', '--json'], env(a));
    expect(r2.code).toBe(0);
    expect((JSON.parse(r2.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ failed: 1 });
    expect(logRecords(r2.stderr).some((l) => l.level === 40 && l.code === 'E_AUTH')).toBe(true);
  });

  it('in the daemon, write-back never holds up ComfyUI: the child starts while the upload is held; /metrics and /status count it', async () => {
    const m = addModel(hub, 150_000);
    const a = await sandbox(hub.endpoint);
    await a.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirror_write: MIRROR });
    let release = (): void => undefined;
    const held = new Promise<void>((r) => (release = r));
    s3.fail = async (q) => {
      if (q.method === 'PUT' && q.key === objectKey(m)) await held;
      return undefined;
    };
    const port = await freePort();
    const record = path.join(a.dir, 'stub.json');
    const d = startRun(['--', process.execPath, STUB, '--listen', '127.0.0.1', '--port', String(port), '--stub-record', record, '--stub-models-dir', a.models], env(a, { MODELSYNC_IDLE_TIMEOUT_MS: '60000' }), await freePort(), [record]);
    await waitFor('ComfyUI to start', () => readRecord(record));
    await waitFor('the upload to be held', () => s3.requests.some((q) => q.method === 'PUT' && q.key === objectKey(m)));
    const metric = async (name: string, labels: Record<string, string> = {}): Promise<number | undefined> => {
      const body = (await d.get('/metrics'))?.body;
      if (body === undefined) return undefined;
      return parsePrometheus(body).get(name)?.samples.find((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
    };
    expect(await metric('modelsync_mirror_writes_total', { outcome: 'uploaded' })).toBe(0);
    expect(await metric('modelsync_bytes_by_source_total', { source: 'origin' })).toBe(m.content.length);
    release();
    await waitFor('the write-back', async () => (await metric('modelsync_mirror_writes_total', { outcome: 'uploaded' })) === 1);
    expect(await metric('modelsync_mirror_write_bytes_total')).toBe(m.content.length);
    const st = JSON.parse((await d.get('/status'))?.body ?? '{}') as { sync: { bytesBySource: Record<string, number> }; mirrors: { write: Record<string, number> } };
    expect(st.sync.bytesBySource).toEqual({ origin: m.content.length, mirror: 0, volume: 0 });
    expect(st.mirrors.write).toMatchObject({ uploaded: 1, failed: 0 });
  });
});
