/**
 * What a normal run prints: every line on stderr is one of modelsync's JSON records (nothing
 * from Node or a dependency: no deprecation or version warning, no stray text), on the Node this
 * suite runs on. CI runs the whole suite on the machine's Node and on Node 24 LTS.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, runCli, sandbox, type Sandbox } from './support/cli.js';
import { freePort, killAll, startRun, STUB, waitFor } from './support/daemon-harness.js';
import { startByteServer, type ByteServer } from './support/byte-server.js';
import { makeSafetensors, startHub, type Hub } from './support/hub.js';
import { jsonLines } from './support/json-lines.js';
import { addModel, exists, sha256 } from './support/models.js';
import { s3Env, startS3, type S3Fixture } from './support/s3-fixture.js';

const BUCKET = 'team-models';
let hub: Hub;
let s3: S3Fixture;
let bytes: ByteServer;
let sb: Sandbox;
let env: Record<string, string>;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  s3 = await startS3([BUCKET]);
  const onS3 = makeSafetensors(70_000, 5);
  await s3.put(BUCKET, `clean-${process.pid}/s3.safetensors`, onS3);
  const onHttps = makeSafetensors(50_000, 6);
  bytes = await startByteServer({ files: { '/https.safetensors': onHttps } });
  sb = await sandbox(hub.endpoint);
  await sb.writeManifest([
    { source: addModel(hub, 60_000).uri, dest: 'checkpoints/hf.safetensors' },
    { source: `s3://${BUCKET}/clean-${process.pid}/s3.safetensors`, dest: 'loras/s3.safetensors', sha256: sha256(onS3) },
    { source: `${bytes.url}/https.safetensors`, dest: 'vae/https.safetensors', sha256: sha256(onHttps) },
    // A mirror read first and written back to: the upload path (lib-storage) must be quiet too.
  ], { mirrors: [`s3://${BUCKET}/mirror-${process.pid}`], mirror_write: `s3://${BUCKET}/mirror-${process.pid}` });
  env = sb.env(s3Env(s3, sb.dir));
});
afterEach(killAll);
afterAll(async () => {
  await sb.cleanup();
  await Promise.all([hub.close(), s3.close(), bytes.close()]);
});

describe('a normal run prints nothing but its output and its JSON records', () => {
  // In order: the first sync fetches from all three kinds of source, the rest find them in place.
  const runs: readonly (readonly string[])[] = [['sync'], ['sync'], ['sync', '--refresh'], ['plan'], ['status'], ['verify'], ['verify', '--full'], ['lock'], ['sync'], ['gc', '--dry-run'], ['gc']];
  runs.forEach((args, i) => {
    it(`modelsync ${args.join(' ')}`, async () => {
      const r = await runCli(args, env);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      // The first sync wrote every blob back to the mirror: that path ran, quietly.
      if (i === 0) expect(r.stdout).toMatch(/^write-back to s3:\/\/.*: 3 uploaded/m);
      const records = jsonLines(r.stderr);
      expect(records.filter((rec) => (rec.level as number) >= 40)).toEqual([]);
      expect(r.stdout + r.stderr).not.toMatch(/warning|deprecat/i);
    });
  });
});

describe('the daemon, resync and help print nothing but output and records either', () => {
  it('modelsync run with ComfyUI, a resync through its control API, a manifest edit, then SIGTERM', async () => {
    const comfy = await freePort();
    const control = await freePort();
    const d = startRun(['--', process.execPath, STUB, '--listen', '127.0.0.1', '--port', String(comfy), '--stub-models-dir', sb.models], env, control);
    await waitFor('/readyz', async () => (await d.get('/readyz'))?.status === 200);
    const resync = await runCli(['resync', '--control', `127.0.0.1:${control}`], env);
    expect(resync.code, resync.stdout + resync.stderr).toBe(0);
    expect(resync.stdout + resync.stderr).not.toMatch(/warning|deprecat/i);
    // The manifest edit: an entry dropped (and unpublished), the edit picked up by the watcher;
    // the lock `lock` wrote above goes too (a manifest without an entry its lock pins is refused).
    const manifest = JSON.parse(await readFile(sb.manifest, 'utf8')) as { models: unknown[] };
    await rm(sb.manifest.replace(/\.json$/, '.lock.json'), { force: true });
    await writeFile(sb.manifest, JSON.stringify({ ...manifest, models: manifest.models.slice(0, 2) }));
    await waitFor('the dropped entry to be unpublished', async () => !(await exists(path.join(sb.models, 'vae/https.safetensors'))));
    d.signal('SIGTERM');
    await d.exited;
    const records = jsonLines(d.stderr());
    expect(records.length).toBeGreaterThan(0);
    expect(records.filter((rec) => (rec.level as number) >= 40).map((rec) => rec.msg)).toEqual([]);
    expect(d.stdout() + d.stderr()).not.toMatch(/warning|deprecat/i);
  });

  for (const command of ['sync', 'run', 'resync', 'plan', 'status', 'verify', 'gc', 'lock']) {
    it(`modelsync ${command} --help`, async () => {
      const r = await runCli([command, '--help'], env);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(new RegExp(`^usage: modelsync ${command} `));
    });
  }
});
