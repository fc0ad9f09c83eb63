import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { parseManifest } from '../src/manifest/load.js';
import { ALL_FAKE_SECRETS, FAKE_SOURCE_TOKEN, leakedSecrets, runCli, type Sandbox } from './support/cli.js';
import { startByteServer } from './support/byte-server.js';
import { freePort } from './support/daemon-harness.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { logRecords } from './support/json-lines.js';
import { addModel, fileSha256, type TestModel } from './support/models.js';
import { s3Env, useS3 } from './support/s3-fixture.js';
import { thrown } from './support/thrown.js';

const BUCKET = 'fleet-mirror';
const PREFIX = 'modelsync/';
const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET]);
let sb: Sandbox;

beforeEach(async () => {
  sb = await sandbox(hub.endpoint);
  hub.resetStats();
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({
    ...s3Env(s3, sb.dir),
    MODELSYNC_RETRY_ATTEMPTS: '2',
    ...extra,
  });
}

const S3_MIRROR = `s3://${BUCKET}/${PREFIX}`;

async function seed(m: TestModel, body: Buffer = m.content): Promise<void> {
  await s3.put(BUCKET, `${PREFIX}sha256/${m.sha256}`, body);
}

function originBytes(m: TestModel): number {
  return hub.stats.bytesServed.get(m.sha256) ?? 0;
}

async function tmpLeft(): Promise<string[]> {
  return readdir(path.join(sb.models, '.modelsync-store', 'tmp')).catch(() => []);
}

describe('manifest: mirrors and mirror_write', () => {
  const parse = (extra: Record<string, unknown>): unknown => parseManifest(JSON.stringify({ version: 1, models: [], ...extra }), '/m.json');

  it('normalises s3:// and https:// prefixes, in order', () => {
    const m = parseManifest(JSON.stringify({ version: 1, models: [], mirrors: ['s3://acme-us/modelsync', 'https://mirror.example/m', 'http://127.0.0.1:9/x/'], mirror_write: 's3://acme-us/modelsync/' }), '/m.json');
    expect(m.mirrors).toEqual([
      { kind: 's3', bucket: 'acme-us', prefix: 'modelsync/', uri: 's3://acme-us/modelsync/' },
      { kind: 'https', base: 'https://mirror.example/m/', uri: 'https://mirror.example/m/' },
      { kind: 'https', base: 'http://127.0.0.1:9/x/', uri: 'http://127.0.0.1:9/x/' },
    ]);
    expect(m.mirrorWrite).toEqual({ kind: 's3', bucket: 'acme-us', prefix: 'modelsync/', uri: 's3://acme-us/modelsync/' });
  });

  it('lists every bad mirror at once: queries, credentials, plain http, dot segments, duplicates, an https mirror_write', () => {
    const e = thrown(() =>
      parse({
        mirrors: ['https://m.example/p?X-Amz-Signature=abc', 'https://user:pw@m.example/p/', 'http://m.example/p/', 's3://acme-us/a/../b/', 'https://m.example/a/%2e%2e/b/', 's3://acme-us/x/', 's3://acme-us/x', 'ftp://m.example/', 's3://Bad_Bucket/'],
        mirror_write: 'https://m.example/p/',
      }),
    ) as { code: string; problems: { field: string }[] };
    expect(e.code).toBe('E_MANIFEST');
    expect(e.problems.map((p) => p.field).sort()).toEqual(['mirror_write', 'mirrors.0', 'mirrors.1', 'mirrors.2', 'mirrors.3', 'mirrors.4', 'mirrors.6', 'mirrors.7', 'mirrors.8']);
  });

  it('sync exits 2 on a bad mirror', async () => {
    await sb.writeManifest([], { mirrors: ['http://mirror.example/'] });
    const r = await runCli(['sync'], env());
    expect(r.code).toBe(2);
    expect(r.stderr + r.stdout).toContain('mirrors.0');
  });
});

describe('mirror reads', () => {
  it('reads a blob from an S3 mirror instead of the origin, verified, ranged', async () => {
    const m = addModel(hub, 300_000);
    await seed(m);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [S3_MIRROR] });
    const r = await runCli(['sync', '--chunk-size', '64K'], env());
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
    expect(originBytes(m)).toBe(0);
    const gets = s3.gets(`${PREFIX}sha256/${m.sha256}`);
    expect(gets.length).toBeGreaterThan(0);
    expect(gets.every((g) => g.range !== undefined && g.ifMatch !== undefined)).toBe(true);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
    expect(ALL_FAKE_SECRETS.some((s) => s3.requests.some((q) => q.headerText.includes(s)))).toBe(false);
    expect(await tmpLeft()).toEqual([]);
  });

  it('falls through a miss (404) and a 403 (no ListBucket) to the origin', async () => {
    const m = addModel(hub, 200_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [S3_MIRROR] });
    const r = await runCli(['sync'], env());
    expect(r.code).toBe(0);
    expect(originBytes(m)).toBe(m.content.length);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
    // A miss is no warning.
    expect(logRecords(r.stderr).some((l) => l.level === 40 && l.mirror !== undefined)).toBe(false);

    const m2 = addModel(hub, 200_000);
    await seed(m2);
    s3.failBucket.set(BUCKET, { status: 403, code: 'AccessDenied' });
    await sb.writeManifest([{ source: m2.uri, dest: 'checkpoints/m2.safetensors' }], { mirrors: [S3_MIRROR] });
    const r2 = await runCli(['sync'], env());
    expect(r2.code).toBe(0);
    expect(originBytes(m2)).toBe(m2.content.length);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m2.safetensors'))).toBe(m2.sha256);
    // A miss, not a failure: no warning, and the mirror is not benched.
    expect(logRecords(r2.stderr).some((l) => l.level === 40 && l.mirror !== undefined)).toBe(false);
  });

  it('a mirror that lies (wrong bytes under the name, a wrong size) never wins: the origin serves, verified', async () => {
    const liar = addModel(hub, 200_000);
    const short = addModel(hub, 200_000);
    const wrong = Buffer.from(liar.content);
    wrong[wrong.length - 10] = (wrong[wrong.length - 10] ?? 0) ^ 0xff;
    await seed(liar, wrong);
    await seed(short, short.content.subarray(0, 150_000));
    await sb.writeManifest(
      [
        { source: liar.uri, dest: 'checkpoints/liar.safetensors' },
        { source: short.uri, dest: 'checkpoints/short.safetensors' },
      ],
      { mirrors: [S3_MIRROR] },
    );
    const r = await runCli(['sync'], env());
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/liar.safetensors'))).toBe(liar.sha256);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/short.safetensors'))).toBe(short.sha256);
    expect(originBytes(liar)).toBe(liar.content.length);
    expect(originBytes(short)).toBe(short.content.length);
    const warned = logRecords(r.stderr).filter((l) => l.level === 40 && l.mirror === S3_MIRROR).map((l) => l.code);
    expect(warned.sort()).toEqual(['E_HASH_MISMATCH', 'E_SIZE_MISMATCH']);
    // The short one was refused at HEAD: not one byte of it was read.
    expect(s3.gets(`${PREFIX}sha256/${short.sha256}`)).toEqual([]);
    expect(await tmpLeft()).toEqual([]);
  });

  it('an https:// read-only mirror, tried after an S3 mirror that misses', async () => {
    const m = addModel(hub, 300_000);
    const web = await startByteServer({ files: { [`/mirror/sha256/${m.sha256}`]: m.content } });
    try {
      await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [S3_MIRROR, `${web.url}/mirror/`] });
      const r = await runCli(['sync', '--chunk-size', '64K'], env());
      expect(r.code).toBe(0);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
      expect(originBytes(m)).toBe(0);
      expect(web.bytesServed).toBeGreaterThanOrEqual(m.content.length);
      expect(s3.requests.filter((q) => q.method === 'HEAD' && q.key === `${PREFIX}sha256/${m.sha256}`)).toHaveLength(1);
    } finally {
      await web.close();
    }
  });

  it('a mirror that is down, or answers 5xx, costs its bounded retries once: then it is benched and the origin serves', async () => {
    const models = Array.from({ length: 8 }, () => addModel(hub, 50_000));
    const port = await freePort();
    const web = await startByteServer({ files: {}, intercept: () => 503 });
    try {
      await sb.writeManifest(
        models.map((m, i) => ({ source: m.uri, dest: `checkpoints/${i}.safetensors` })),
        { mirrors: [`http://127.0.0.1:${port}/m/`, `${web.url}/m/`] },
      );
      const r = await runCli(['sync', '--connections', '1'], env());
      expect(r.code).toBe(0);
      for (const [i, m] of models.entries()) {
        expect(await fileSha256(path.join(sb.models, `checkpoints/${i}.safetensors`))).toBe(m.sha256);
        expect(originBytes(m)).toBe(m.content.length);
      }
      // The first files in flight (4 at --connections 1) spend two attempts each
      // (MODELSYNC_RETRY_ATTEMPTS=2); every file after them finds the mirror benched.
      expect(web.requests.length).toBeGreaterThan(0);
      expect(web.requests.length).toBeLessThanOrEqual(8);
      const warned = logRecords(r.stderr).filter((l) => l.level === 40 && l.benched === true);
      expect(new Set(warned.map((l) => l.mirror))).toEqual(new Set([`${web.url}/m/`, `http://127.0.0.1:${port}/m/`]));
      expect(warned.length).toBeLessThanOrEqual(8);
    } finally {
      await web.close();
    }
  });

  it('refuses a hostile redirect from an https mirror (to another host with other bytes, to file:) and falls through', async () => {
    const m = addModel(hub, 100_000);
    const evil = await startByteServer({ host: '127.0.0.2', files: { '/x': Buffer.alloc(100_000, 7) } });
    const web = await startByteServer({ files: {}, redirects: { [`/m/sha256/${m.sha256}`]: `${evil.url}/x` } });
    try {
      await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [`${web.url}/m/`] });
      // The mirror's token (MODELSYNC_HTTP_TOKENS) goes to the mirror's host, never where it redirects.
      const r = await runCli(['sync'], env({ MODELSYNC_HTTP_TOKENS: `127.0.0.1=${FAKE_SOURCE_TOKEN}` }));
      expect(r.code).toBe(0);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
      expect(originBytes(m)).toBe(m.content.length);
      expect(web.requests.some((q) => q.authorization === `Bearer ${FAKE_SOURCE_TOKEN}`)).toBe(true);
      expect(evil.requests.length).toBeGreaterThan(0);
      expect(evil.requests.every((q) => q.authorization === undefined)).toBe(true);
      expect(logRecords(r.stderr).some((l) => l.level === 40 && (l.code === 'E_SIZE_MISMATCH' || l.code === 'E_HASH_MISMATCH'))).toBe(true);
    } finally {
      await web.close();
      await evil.close();
    }
    const m2 = addModel(hub, 100_000);
    const web2 = await startByteServer({ files: {}, redirects: { [`/m/sha256/${m2.sha256}`]: 'file:///etc/passwd' } });
    try {
      await sb.writeManifest([{ source: m2.uri, dest: 'checkpoints/m2.safetensors' }], { mirrors: [`${web2.url}/m/`] });
      const r = await runCli(['sync'], env());
      expect(r.code).toBe(0);
      expect(originBytes(m2)).toBe(m2.content.length);
      expect(logRecords(r.stderr).some((l) => l.level === 40 && l.code === 'E_REDIRECT')).toBe(true);
    } finally {
      await web2.close();
    }
  });

  it('a partial begun on a mirror is finished from the origin: the partial is named by content', async () => {
    const m = addModel(hub, 9 * 1024 * 1024);
    // The mirror serves the first chunk, then fails every other range.
    const web = await startByteServer({ files: { [`/m/sha256/${m.sha256}`]: m.content }, intercept: (q) => (q.range !== undefined && !/^bytes=0-/.test(q.range) ? 503 : undefined) });
    try {
      await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [`${web.url}/m/`] });
      const r = await runCli(['sync', '--chunk-size', '4M', '--connections', '1'], env({ MODELSYNC_RETRY_ATTEMPTS: '1' }));
      expect(r.code).toBe(0);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
      const fromOrigin = originBytes(m);
      expect(fromOrigin).toBeGreaterThan(0);
      expect(fromOrigin).toBeLessThan(m.content.length);
      expect(fromOrigin + 4 * 1024 * 1024).toBeGreaterThanOrEqual(m.content.length);
    } finally {
      await web.close();
    }
  });
});
