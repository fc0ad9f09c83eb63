/**
 * docs/deployment.md's IAM policies against the S3 calls modelsync makes: every request a
 * reading node, a `mirror_write` node and a `mirror push` seeder send (seen by the S3 stand-in),
 * named by the IAM action AWS authorises it with, must be allowed by that role's policy as the
 * docs print it, and the writer's policy must grant nothing the code never asks for.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, runCli, type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256 } from './support/models.js';
import { s3Env, useS3, type S3Seen } from './support/s3-fixture.js';

const BUCKET = 'acme-models-us-east';
const PREFIX = 'modelsync/';
const MIRROR = `s3://${BUCKET}/${PREFIX}`;
const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET]);

function env(sb: Sandbox): Record<string, string> {
  return sb.env({
    ...s3Env(s3, sb.dir),
    MODELSYNC_RETRY_ATTEMPTS: '2',
  });
}

/** The IAM action S3 authorises a REST request with (docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html). */
function iamAction(q: S3Seen): string {
  const has = (p: string): boolean => q.query.has(p);
  if (q.key === '') return q.method === 'GET' && !has('uploads') ? 's3:ListBucket' : `unknown bucket call ${q.method} ?${q.query.toString()}`;
  if (q.method === 'HEAD' || (q.method === 'GET' && [...q.query.keys()].every((k) => k === 'x-id'))) return 's3:GetObject';
  if (q.method === 'PUT' && !has('uploadId') && !has('tagging') && !has('acl')) return 's3:PutObject';
  // CreateMultipartUpload, UploadPart and CompleteMultipartUpload are all authorised as s3:PutObject.
  if (q.method === 'POST' && has('uploads')) return 's3:PutObject';
  if (q.method === 'PUT' && has('uploadId') && has('partNumber')) return 's3:PutObject';
  if (q.method === 'POST' && has('uploadId')) return 's3:PutObject';
  if (q.method === 'DELETE' && has('uploadId')) return 's3:AbortMultipartUpload';
  if (q.method === 'DELETE') return 's3:DeleteObject';
  return `unknown object call ${q.method} ?${q.query.toString()}`;
}

interface Statement {
  readonly Action: string | readonly string[];
  readonly Resource: string;
}

/** The JSON policy printed after `heading` in docs/deployment.md. */
async function documentedPolicy(heading: string): Promise<Statement[]> {
  const doc = await readFile(path.join(REPO_ROOT, 'docs', 'deployment.md'), 'utf8');
  const at = doc.indexOf(heading);
  expect(at, heading).toBeGreaterThan(0);
  const block = /```json\n([\s\S]*?)```/.exec(doc.slice(at));
  return (JSON.parse(block?.[1] ?? '{}') as { Statement: Statement[] }).Statement;
}

function allowed(policy: readonly Statement[], q: S3Seen): boolean {
  const action = iamAction(q);
  const resource = q.key === '' ? `arn:aws:s3:::${q.bucket}` : `arn:aws:s3:::${q.bucket}/${q.key}`;
  return policy.some((s) => (typeof s.Action === 'string' ? [s.Action] : s.Action).includes(action) && (s.Resource.endsWith('*') ? resource.startsWith(s.Resource.slice(0, -1)) : resource === s.Resource));
}

function actions(policy: readonly Statement[]): Set<string> {
  return new Set(policy.flatMap((s) => (typeof s.Action === 'string' ? [s.Action] : s.Action)));
}

describe("docs/deployment.md's IAM policies are what the code calls", () => {
  it('a reading node: HeadObject and ranged GetObject (s3:GetObject) under the prefix, a miss included; nothing else', async () => {
    const policy = await documentedPolicy('**IAM for a reading node**');
    const hit = addModel(hub, 300_000);
    const miss = addModel(hub, 100_000);
    await s3.put(BUCKET, `${PREFIX}sha256/${hit.sha256}`, hit.content);
    s3.requests.length = 0;
    const sb = await sandbox(hub.endpoint);
    await sb.writeManifest(
      [
        { source: hit.uri, dest: 'checkpoints/hit.safetensors' },
        { source: miss.uri, dest: 'checkpoints/miss.safetensors' },
      ],
      { mirrors: [MIRROR] },
    );
    const r = await runCli(['sync', '--chunk-size', '64K'], env(sb));
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/hit.safetensors'))).toBe(hit.sha256);
    expect(s3.requests.length).toBeGreaterThan(0);
    for (const q of s3.requests) expect(allowed(policy, q), `${q.method} ${q.key} ?${q.query.toString()} (${iamAction(q)})`).toBe(true);
    expect(new Set(s3.requests.map(iamAction))).toEqual(new Set(['s3:GetObject']));
    // s3:ListBucket is granted only so that a miss is a 404 (the docs say it is optional): never called.
    expect([...actions(policy)].sort()).toEqual(['s3:GetObject', 's3:ListBucket']);
  });

  it('a mirror_write node and a mirror push seeder: PutObject (multipart too) and AbortMultipartUpload under the prefix, every action of the policy used', async () => {
    const policy = await documentedPolicy('**IAM for a `mirror_write` node');
    const big = addModel(hub, 9 * 1024 * 1024);
    const small = addModel(hub, 100_000);
    const torn = addModel(hub, 9 * 1024 * 1024);
    const seeded = addModel(hub, 100_000);
    const sb = await sandbox(hub.endpoint);
    await sb.writeManifest(
      [
        { source: big.uri, dest: 'checkpoints/big.safetensors' },
        { source: small.uri, dest: 'checkpoints/small.safetensors' },
      ],
      { mirrors: [MIRROR], mirror_write: MIRROR },
    );
    const r = await runCli(['sync', '--json'], env(sb));
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ uploaded: 2, failed: 0 });

    // A multipart upload whose second part is refused is aborted (its parts are not left billed).
    s3.fail = (q) => (q.method === 'PUT' && q.query.get('partNumber') === '2' ? { status: 403, code: 'AccessDenied' } : undefined);
    await sb.writeManifest([{ source: torn.uri, dest: 'checkpoints/torn.safetensors' }], { mirror_write: MIRROR });
    const t = await runCli(['sync', '--json'], env(sb));
    expect(t.code).toBe(0);
    expect((JSON.parse(t.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ failed: 1 });
    expect(s3.requests.some((q) => q.method === 'DELETE' && q.key === `${PREFIX}sha256/${torn.sha256}` && q.query.has('uploadId'))).toBe(true);
    s3.fail = undefined;

    // mirror push: HeadObject per blob, then PutObject for what is absent.
    await sb.writeManifest([{ source: seeded.uri, dest: 'checkpoints/seeded.safetensors' }]);
    const p = await runCli(['mirror', 'push', '--to', MIRROR], env(sb));
    expect(p.code, p.stderr).toBe(0);

    for (const q of s3.requests) expect(allowed(policy, q), `${q.method} ${q.key} ?${q.query.toString()} (${iamAction(q)})`).toBe(true);
    const used = new Set(s3.requests.map(iamAction));
    expect([...used].sort()).toEqual(['s3:AbortMultipartUpload', 's3:GetObject', 's3:PutObject']);
    // Nothing granted that is never used, but the optional s3:ListBucket (a miss as 404).
    expect([...actions(policy)].filter((a) => a !== 's3:ListBucket').sort()).toEqual([...used].sort());
  });
});
