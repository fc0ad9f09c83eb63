import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, type Sandbox } from './support/cli.js';
import { gitBlobSha1Hex, makeSafetensors } from './support/hub.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { fileSha256, sha256 } from './support/models.js';
import { s3Env, useS3 } from './support/s3-fixture.js';

const BUCKET = 'locked-models';

const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET]);
let web: Server;
let webUrl = '';
let webRequests = 0;
const webFiles = new Map<string, Buffer>();
let sb: Sandbox;
let seq = 0;

interface LockJson {
  lockVersion: number;
  manifest: string;
  entries: { source: string; dest: string; size: number; sha256: string; commit?: string; gitsha1?: string; etag?: string; sha256From: string }[];
}

beforeAll(async () => {
  web = createServer((req, res) => {
    webRequests++;
    const body = webFiles.get(req.url ?? '');
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  webUrl = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((r) => web.close(r));
});
beforeEach(async () => {
  sb = await sandbox(hub.endpoint);
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({ ...s3Env(s3, sb.dir), ...extra });
}

const lockFile = (): string => path.join(sb.dir, 'manifest.lock.json');
const readLockJson = async (): Promise<LockJson> => JSON.parse(await readFile(lockFile(), 'utf8')) as LockJson;

interface World {
  readonly repo: string;
  readonly commit: string;
  readonly weights: Buffer;
  readonly config: Buffer;
  readonly s3Body: Buffer;
  readonly s3Key: string;
  readonly webBody: Buffer;
  readonly models: Record<string, unknown>[];
}

/** One hf:// repo (an LFS weight file and a small plain file), an s3:// and an https:// file without sha256. */
async function world(): Promise<World> {
  const n = ++seq;
  const repo = `lock-org/model-${process.pid}-${n}`;
  const weights = makeSafetensors(300 * 1024, 100 + n);
  const config = Buffer.from(`model:\n  name: m${n}\n`);
  const { commit } = hub.addRepo({ id: repo, files: [{ path: 'model.safetensors', content: weights }, { path: 'config.yaml', content: config }] });
  const s3Body = makeSafetensors(200 * 1024, 200 + n);
  const s3Key = `w${n}/style lora.safetensors`;
  await s3.put(BUCKET, s3Key, s3Body);
  const webBody = makeSafetensors(64 * 1024, 300 + n);
  webFiles.set(`/w${n}/up.safetensors`, webBody);
  const models = [
    { source: `hf://${repo}/model.safetensors`, dest: 'checkpoints/m.safetensors' },
    { source: `hf://${repo}/config.yaml`, dest: 'configs/m.yaml' },
    { source: `s3://${BUCKET}/${s3Key}`, dest: 'loras/style.safetensors' },
    { source: `${webUrl}/w${n}/up.safetensors`, dest: 'upscale_models/up.safetensors' },
  ];
  await sb.writeManifest(models);
  return { repo, commit, weights, config, s3Body, s3Key, webBody, models };
}

async function expectPublished(w: World): Promise<void> {
  expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(sha256(w.weights));
  expect(await fileSha256(path.join(sb.models, 'configs/m.yaml'))).toBe(sha256(w.config));
  expect(await fileSha256(path.join(sb.models, 'loras/style.safetensors'))).toBe(sha256(w.s3Body));
  expect(await fileSha256(path.join(sb.models, 'upscale_models/up.safetensors'))).toBe(sha256(w.webBody));
}

describe('modelsync lock', () => {
  it('pins every entry, then a sync on a fresh node needs no Hub API call, even offline', async () => {
    const w = await world();
    const unlocked = await runCli(['sync'], env());
    expect(unlocked.code).toBe(2);
    expect(unlocked.stderr).toContain('"modelsync lock" can compute it');

    const locked = await runCli(['lock'], env());
    expect(locked.stderr).not.toContain('internal error');
    expect(locked.code).toBe(0);
    expect(locked.stdout).toContain('computed by downloading the file once; add "sha256:');
    const lock = await readLockJson();
    expect(leakedSecrets(await readFile(lockFile(), 'utf8'), locked.stdout, locked.stderr)).toEqual([]);
    expect(lock).toMatchObject({ lockVersion: 1, manifest: 'manifest.json' });
    expect(lock.entries).toEqual([
      { source: w.models[0]?.source, dest: 'checkpoints/m.safetensors', size: w.weights.length, sha256: sha256(w.weights), commit: w.commit, sha256From: 'hub' },
      { source: w.models[1]?.source, dest: 'configs/m.yaml', size: w.config.length, sha256: sha256(w.config), commit: w.commit, gitsha1: gitBlobSha1Hex(w.config), sha256From: 'download' },
      { source: w.models[2]?.source, dest: 'loras/style.safetensors', size: w.s3Body.length, sha256: sha256(w.s3Body), etag: expect.any(String) as string, sha256From: 'download' },
      { source: w.models[3]?.source, dest: 'upscale_models/up.safetensors', size: w.webBody.length, sha256: sha256(w.webBody), sha256From: 'download' },
    ]);

    // A fresh node (empty state DB), told to stay off the Hub API.
    hub.resetStats();
    const sync = await runCli(['sync', '--offline'], env({ MODELSYNC_STATE_DIR: path.join(sb.dir, 'state-2') }));
    expect(sync.stdout).not.toContain('FAILED');
    expect(sync.code).toBe(0);
    expect(hub.stats.apiCalls).toBe(0);
    await expectPublished(w);

    // Locking again changes nothing and reads nothing: every pin is kept.
    const before = await readFile(lockFile(), 'utf8');
    hub.resetStats();
    s3.requests.length = 0;
    webRequests = 0;
    const again = await runCli(['lock'], env());
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/4 entries \(4 kept/);
    expect(await readFile(lockFile(), 'utf8')).toBe(before);
    expect([hub.stats.requests.length, s3.requests.length, webRequests]).toEqual([0, 0, 0]);
  });

  it('refuses a manifest that drifted from its lock (exit 2) until --update-lock', async () => {
    const w = await world();
    expect((await runCli(['lock'], env())).code).toBe(0);
    const first = await readLockJson();

    const extra = makeSafetensors(30 * 1024, 999);
    webFiles.set(`/extra-${seq}.safetensors`, extra);
    const added = { source: `${webUrl}/extra-${seq}.safetensors`, dest: 'vae/extra.safetensors', sha256: sha256(extra) };
    await sb.writeManifest([...w.models, added]);
    const drift = await runCli(['sync'], env());
    expect(drift.code).toBe(2);
    expect(drift.stderr).toContain('disagrees with manifest');
    expect(drift.stderr).toContain('models[4] (vae/extra.safetensors)');
    expect(drift.stderr).toContain('--update-lock');
    expect(await readLockJson()).toEqual(first);
    expect((await runCli(['plan'], env())).code).toBe(2);

    s3.requests.length = 0;
    const updated = await runCli(['sync', '--update-lock'], env());
    expect(updated.stdout).not.toContain('FAILED');
    expect(updated.code).toBe(0);
    const second = await readLockJson();
    expect(second.entries.slice(0, 4)).toEqual(first.entries);
    expect(second.entries[4]).toMatchObject({ dest: 'vae/extra.safetensors', sha256: sha256(extra), size: extra.length, sha256From: 'manifest' });
    // The s3 object was read once, by the sync: the kept pin needed no second download to hash it.
    expect(s3.gets(w.s3Key)).toHaveLength(1);
    await expectPublished(w);

    // A sha256 in the manifest that contradicts the lock, and an entry dropped from the manifest.
    await sb.writeManifest([{ ...w.models[0], sha256: 'ab'.repeat(32) }, ...w.models.slice(1, 3)]);
    const contradict = await runCli(['sync'], env());
    expect(contradict.code).toBe(2);
    expect(contradict.stderr).toContain(`models[0] (checkpoints/m.safetensors): the manifest says sha256 ${'ab'.repeat(32)}, the lock ${sha256(w.weights)}`);
    expect(contradict.stderr).toContain('which the manifest no longer has');
  });

  it('an unusable lock file stops a sync with exit 2', async () => {
    await world();
    await writeFile(lockFile(), '{"lockVersion": 1, "entries": "nope"');
    const r = await runCli(['sync'], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('is not a usable modelsync lock');
  });

  it('keeps a branch pinned until `lock --refresh` moves it, and a sync then follows the lock', async () => {
    const w = await world();
    expect((await runCli(['lock'], env())).code).toBe(0);
    expect((await runCli(['sync'], env())).code).toBe(0);

    const v2 = makeSafetensors(310 * 1024, 4242);
    const { commit: c2 } = hub.pushFiles(w.repo, [{ path: 'model.safetensors', content: v2 }]);
    hub.resetStats();
    const pinned = await runCli(['sync', '--refresh'], env());
    expect(pinned.code).toBe(0);
    expect(hub.stats.apiCalls).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(sha256(w.weights));

    const refreshed = await runCli(['lock', '--refresh'], env());
    expect(refreshed.code).toBe(0);
    expect((await readLockJson()).entries[0]).toMatchObject({ commit: c2, sha256: sha256(v2), size: v2.length });
    hub.resetStats();
    const moved = await runCli(['sync'], env());
    expect(moved.code).toBe(0);
    expect(hub.stats.apiCalls).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(sha256(v2));
  });
});
