import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256, type TestModel } from './support/models.js';
import { s3Env, useS3 } from './support/s3-fixture.js';

const BUCKET = 'fleet-seed';
const DOWN = 'fleet-seed-down';
const PREFIX = 'seed/';
const TARGET = `s3://${BUCKET}/${PREFIX}`;
const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET, DOWN]);

beforeEach(() => {
  hub.resetStats();
});

function env(sb: Sandbox): Record<string, string> {
  return sb.env({
    ...s3Env(s3, sb.dir),
    MODELSYNC_RETRY_ATTEMPTS: '2',
  });
}

function served(m: TestModel): number {
  return hub.stats.bytesServed.get(m.sha256) ?? 0;
}

interface Pushed {
  ok: boolean;
  uploaded: number;
  present: number;
  failed: number;
  skipped: number;
  bytes: number;
  blobs: { key: string; outcome: string; error?: { code: string } }[];
}

describe('modelsync mirror push --to', () => {
  it('seeds a mirror from the local store (no origin request), skips what is there, and the next node reads from it', async () => {
    const a = addModel(hub, 150_000, { extra: [{ path: 'config.json', content: Buffer.from('{"small": true}\n'), lfs: false }] });
    const b = addModel(hub, 250_000);
    const entries = [
      { source: a.uri, dest: 'checkpoints/a.safetensors' },
      { source: `hf://${a.repo}/config.json`, dest: 'configs/a.json' },
      { source: b.uri, dest: 'loras/b.safetensors' },
      { source: b.uri, dest: 'loras/b-again.safetensors' },
    ];
    const seeder = await sandbox(hub.endpoint);
    await seeder.writeManifest(entries);
    expect((await runCli(['sync'], env(seeder))).code).toBe(0);
    hub.resetStats();
    const r = await runCli(['mirror', 'push', '--to', TARGET, '--json'], env(seeder));
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.stdout) as Pushed;
    expect(rep).toMatchObject({ ok: true, uploaded: 2, present: 0, failed: 0, skipped: 1, bytes: a.content.length + b.content.length });
    expect(served(a) + served(b)).toBe(0);

    const again = await runCli(['mirror', 'push', '--to', TARGET], env(seeder));
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/3 blobs to s3:\/\/fleet-seed\/seed\/: 0 uploaded \(0 B\), 2 already there, 1 skipped \(no sha256\), 0 failed/);

    const node = await sandbox(hub.endpoint);
    await node.writeManifest(entries, { mirrors: [TARGET] });
    const rn = await runCli(['sync', '--json'], env(node));
    expect(rn.code).toBe(0);
    expect((JSON.parse(rn.stdout) as { bytesBySource: Record<string, number> }).bytesBySource.mirror).toBe(a.content.length + b.content.length);
    expect(served(a) + served(b)).toBe(0);
    expect(await fileSha256(path.join(node.models, 'loras/b-again.safetensors'))).toBe(b.sha256);
  });

  it('a blob the mirror has already is skipped before any fetch: a fresh seeder asks the origin for nothing', async () => {
    const m = addModel(hub, 200_000);
    const first = await sandbox(hub.endpoint);
    await first.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    expect((await runCli(['mirror', 'push', '--to', TARGET], env(first))).code).toBe(0);
    hub.resetStats();
    const fresh = await sandbox(hub.endpoint);
    await fresh.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    const r = await runCli(['mirror', 'push', '--to', TARGET, '--json'], env(fresh));
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout) as Pushed).toMatchObject({ uploaded: 0, present: 1, failed: 0 });
    expect(served(m)).toBe(0);
  });

  it('fetches (verified) what the local store lacks before pushing it', async () => {
    const m = addModel(hub, 200_000);
    const seeder = await sandbox(hub.endpoint);
    await seeder.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    const r = await runCli(['mirror', 'push', '--to', TARGET, '--json'], env(seeder));
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout) as Pushed).toMatchObject({ uploaded: 1, failed: 0 });
    expect(served(m)).toBe(m.content.length);
    expect(await fileSha256(path.join(seeder.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
  });

  it('exit 1 when the mirror refuses, exit 2 on bad usage', async () => {
    const m = addModel(hub, 100_000);
    const seeder = await sandbox(hub.endpoint);
    await seeder.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    s3.failBucket.set(DOWN, { status: 503, code: 'ServiceUnavailable' });
    const r = await runCli(['mirror', 'push', '--to', `s3://${DOWN}/x/`, '--json'], env(seeder));
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout) as Pushed;
    expect(rep.failed).toBe(1);
    expect(rep.blobs[0]?.error?.code).toBe('E_S3');
    for (const args of [['mirror'], ['mirror', 'pull', '--to', TARGET], ['mirror', 'push'], ['mirror', 'push', '--to', 'https://mirror.example/m/'], ['mirror', 'push', '--to', 's3://b/x?y=1'], ['mirror', 'push', 'extra', '--to', TARGET]]) {
      const u = await runCli(args, env(seeder));
      expect(u.code, args.join(' ')).toBe(2);
    }
  });
});
