import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ALL_FAKE_SECRETS, leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from './support/cli.js';
import { freePort } from './support/daemon-harness.js';
import { makeSafetensors } from './support/hub.js';
import { exists, fileSha256, sha256 } from './support/models.js';
import { s3Env, useS3 } from './support/s3-fixture.js';
import { secretsInFiles } from './support/scan-secrets.js';

const BUCKET = 'team-models';
const SESSION_TOKEN = 'AWSSESSIONdoNotLeak0123456789';
const SECRETS = [...ALL_FAKE_SECRETS, SESSION_TOKEN];

const s3 = await useS3([BUCKET]);
let sb: Sandbox;
let seq = 0;

beforeEach(async () => {
  sb = await sandbox();
});
afterEach(async () => {
  await sb.cleanup();
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({ ...s3Env(s3, sb.dir), AWS_SESSION_TOKEN: SESSION_TOKEN, MODELSYNC_RETRY_ATTEMPTS: '3', ...extra });
}

function uniqueKey(name: string): string {
  return `run ${process.pid}-${++seq}/${name}`;
}

async function expectNoSecrets(r: CliResult): Promise<void> {
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stdout + r.stderr).not.toContain(SESSION_TOKEN);
  expect(await secretsInFiles([sb.state, sb.models], SECRETS)).toEqual([]);
}

async function storeBlobs(): Promise<string[]> {
  const root = path.join(sb.models, '.modelsync-store', 'blobs');
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(path.join(d, e.name));
      else out.push(e.name);
    }
  };
  await walk(root);
  return out;
}

describe('s3:// sources', () => {
  it('downloads single-part and multipart objects in parallel ranges pinned by If-Match, keys with spaces and unicode', async () => {
    const single = makeSafetensors(700 * 1024, 11);
    const multi = makeSafetensors(1300 * 1024, 12);
    const k1 = uniqueKey('loras/style one ü.safetensors');
    const k2 = uniqueKey('checkpoints/big model 模型 +plus.safetensors');
    const e1 = await s3.put(BUCKET, k1, single);
    const e2 = await s3.put(BUCKET, k2, multi, { partSize: 512 * 1024 });
    await sb.writeManifest([
      { source: `s3://${BUCKET}/${k1}`, dest: 'loras/style one ü.safetensors', sha256: sha256(single), size: single.length },
      { source: `s3://${BUCKET}/${k2}`, dest: 'checkpoints/big.safetensors', sha256: sha256(multi) },
    ]);
    const r = await runCli(['sync', '--chunk-size', '128K', '--connections', '4'], env());
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'loras', 'style one ü.safetensors'))).toBe(sha256(single));
    expect(await fileSha256(path.join(sb.models, 'checkpoints', 'big.safetensors'))).toBe(sha256(multi));
    for (const [key, etag, size] of [[k1, e1, single.length], [k2, e2, multi.length]] as const) {
      const gets = s3.gets(key);
      expect(gets).toHaveLength(Math.ceil(size / (128 * 1024)));
      expect(gets.every((g) => g.ifMatch === etag && g.range !== undefined && g.status === 206)).toBe(true);
      expect(s3.requests.filter((q) => q.method === 'HEAD' && q.key === key)).toHaveLength(1);
    }
    await expectNoSecrets(r);

    // A second sync is warm: no request at all.
    s3.requests.length = 0;
    const again = await runCli(['sync'], env());
    expect(again.code).toBe(0);
    expect(s3.requests).toEqual([]);
  });

  it('takes endpoint and path-style addressing from the manifest', async () => {
    const body = makeSafetensors(10_000, 13);
    const key = uniqueKey('vae/v.safetensors');
    await s3.put(BUCKET, key, body);
    await sb.writeManifest([{ source: `s3://${BUCKET}/${key}`, dest: 'vae/v.safetensors', sha256: sha256(body) }], {
      s3: { endpoint: s3.endpoint, region: 'eu-central-1', path_style: true },
    });
    const e = env();
    delete e.AWS_ENDPOINT_URL_S3;
    const r = await runCli(['sync'], e);
    expect(r.code).toBe(0);
    expect(s3.gets(key).length).toBeGreaterThan(0);
  });

  it('refuses a wrong sha256: nothing is published and nothing enters the store', async () => {
    const body = makeSafetensors(200 * 1024, 14);
    const key = uniqueKey('loras/wrong.safetensors');
    await s3.put(BUCKET, key, body);
    await sb.writeManifest([{ source: `s3://${BUCKET}/${key}`, dest: 'loras/wrong.safetensors', sha256: 'ab'.repeat(32) }]);
    const r = await runCli(['sync', '--chunk-size', '64K'], env());
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/sha256 mismatch: expected abab/);
    expect(await exists(path.join(sb.models, 'loras', 'wrong.safetensors'))).toBe(false);
    expect(await storeBlobs()).toEqual([]);
    await expectNoSecrets(r);
  });

  it("cross-checks S3's full-object ChecksumSHA256 before downloading anything", async () => {
    const body = makeSafetensors(50_000, 15);
    const key = uniqueKey('loras/checked.safetensors');
    await s3.put(BUCKET, key, body);
    s3.headHeaders.set(key, { 'x-amz-checksum-sha256': Buffer.from(sha256(body), 'hex').toString('base64'), 'x-amz-checksum-type': 'FULL_OBJECT' });
    await sb.writeManifest([{ source: `s3://${BUCKET}/${key}`, dest: 'loras/checked.safetensors', sha256: 'cd'.repeat(32) }]);
    const r = await runCli(['sync'], env());
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`ChecksumSHA256 is ${sha256(body)}`);
    expect(s3.gets(key)).toEqual([]);
  });

  it('names the credential chain it tried when there are no credentials', async () => {
    const e = env();
    delete e.AWS_ACCESS_KEY_ID;
    delete e.AWS_SECRET_ACCESS_KEY;
    delete e.AWS_SESSION_TOKEN;
    await sb.writeManifest([{ source: `s3://${BUCKET}/${uniqueKey('loras/x.safetensors')}`, dest: 'loras/x.safetensors', sha256: 'ab'.repeat(32) }]);
    const r = await runCli(['sync'], e);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('no AWS credentials found; tried environment (AWS_ACCESS_KEY_ID');
    expect(r.stdout).toContain('EC2 instance metadata');
    expect(s3.requests).toEqual([]);
  });

  it('says NoSuchKey, NoSuchBucket, AccessDenied and the region S3 named, one line per entry', async () => {
    s3.failBucket.set('locked-bucket', { status: 403, code: 'AccessDenied' });
    s3.failBucket.set('far-bucket', { status: 301, code: 'PermanentRedirect', headers: { 'x-amz-bucket-region': 'eu-west-1' } });
    const h = 'ab'.repeat(32);
    await sb.writeManifest([
      { source: `s3://${BUCKET}/${uniqueKey('no such key.safetensors')}`, dest: 'loras/a.safetensors', sha256: h },
      { source: 's3://no-such-bucket/x.safetensors', dest: 'loras/b.safetensors', sha256: h },
      { source: 's3://locked-bucket/x.safetensors', dest: 'loras/c.safetensors', sha256: h },
      { source: 's3://far-bucket/x.safetensors', dest: 'loras/d.safetensors', sha256: h },
    ]);
    const r = await runCli(['sync'], env());
    expect(r.code).toBe(1);
    const line = (dest: string): string => r.stdout.split('\n').find((l) => l.includes(dest)) ?? '';
    expect(line('loras/a.safetensors')).toMatch(/no such key in bucket "team-models" \(NoSuchKey/);
    expect(line('loras/b.safetensors')).toMatch(/bucket "no-such-bucket" does not exist \(NoSuchBucket/);
    expect(line('loras/c.safetensors')).toMatch(/access denied \(AccessDenied/);
    expect(line('loras/d.safetensors')).toMatch(/is in region eu-west-1, not us-east-1: set s3.region: eu-west-1/);
    await expectNoSecrets(r);
  });

  it('says which endpoint it cannot reach', async () => {
    const port = await freePort();
    await sb.writeManifest([{ source: `s3://${BUCKET}/x.safetensors`, dest: 'loras/x.safetensors', sha256: 'ab'.repeat(32) }]);
    const r = await runCli(['sync'], env({ AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`, MODELSYNC_RETRY_ATTEMPTS: '2' }));
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`cannot reach S3 endpoint 127.0.0.1:${port} (ECONNREFUSED)`);
  });

  it('restarts cleanly when the object is replaced between ranges (If-Match answers 412)', async () => {
    const old = makeSafetensors(512 * 1024, 16);
    const next = makeSafetensors(520 * 1024, 17);
    const key = uniqueKey('checkpoints/replaced.safetensors');
    const oldEtag = await s3.put(BUCKET, key, old);
    let newEtag = '';
    s3.beforeGet = async (k, n) => {
      if (k === key && n === 3) newEtag = await s3.put(BUCKET, key, next);
    };
    // The manifest already names the new content: the bucket was updated while nodes synced.
    await sb.writeManifest([{ source: `s3://${BUCKET}/${key}`, dest: 'checkpoints/replaced.safetensors', sha256: sha256(next) }]);
    const r = await runCli(['sync', '--chunk-size', '64K', '--connections', '1'], env());
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints', 'replaced.safetensors'))).toBe(sha256(next));
    const gets = s3.gets(key);
    expect(gets.map((g) => g.status).filter((s) => s === 412)).toHaveLength(1);
    expect(gets.slice(0, 2).every((g) => g.ifMatch === oldEtag)).toBe(true);
    expect(gets.slice(3).every((g) => g.ifMatch === newEtag && g.status === 206)).toBe(true);
    expect(gets.slice(3)).toHaveLength(Math.ceil(next.length / (64 * 1024)));
    expect(r.stderr).toContain('source changed during download');
    expect(r.stderr).not.toContain('failed verification');
  });

  it('notices a replaced object even when the server ignores If-Match, from the ETag it answers with', async () => {
    s3.enforceIfMatch = false;
    const old = makeSafetensors(256 * 1024, 18);
    const next = makeSafetensors(256 * 1024, 19);
    const key = uniqueKey('checkpoints/replaced-lax.safetensors');
    await s3.put(BUCKET, key, old);
    s3.beforeGet = async (k, n) => {
      if (k === key && n === 2) await s3.put(BUCKET, key, next);
    };
    await sb.writeManifest([{ source: `s3://${BUCKET}/${key}`, dest: 'checkpoints/replaced-lax.safetensors', sha256: sha256(next) }]);
    const r = await runCli(['sync', '--chunk-size', '64K', '--connections', '1'], env());
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('source changed during download');
    expect(r.stderr).not.toContain('failed verification');
  });

  it('gives up after a bounded number of restarts when the object keeps changing', async () => {
    const a = makeSafetensors(256 * 1024, 20);
    const b = makeSafetensors(256 * 1024, 21);
    const key = uniqueKey('checkpoints/flapping.safetensors');
    await s3.put(BUCKET, key, a);
    s3.beforeGet = async (k, n) => {
      if (k === key && n % 2 === 0) await s3.put(BUCKET, key, n % 4 === 0 ? a : b);
    };
    await sb.writeManifest([{ source: `s3://${BUCKET}/${key}`, dest: 'checkpoints/flapping.safetensors', sha256: sha256(a) }]);
    const r = await runCli(['sync', '--chunk-size', '64K', '--connections', '1'], env());
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('was replaced while it was being downloaded');
    expect(s3.gets(key).filter((g) => g.status === 412)).toHaveLength(3);
    expect(await exists(path.join(sb.models, 'checkpoints', 'flapping.safetensors'))).toBe(false);
    await expectNoSecrets(r);
  });
});
