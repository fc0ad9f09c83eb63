/**
 * What a normal run prints: every line on stderr is one of modelsync's JSON records (nothing
 * from Node or a dependency: no deprecation or version warning, no stray text), on the Node this
 * suite runs on. CI runs the whole suite on the machine's Node and on Node 24 LTS.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, runCli, sandbox, type Sandbox } from './support/cli.js';
import { startByteServer, type ByteServer } from './support/byte-server.js';
import { makeSafetensors, startHub, type Hub } from './support/hub.js';
import { jsonLines } from './support/json-lines.js';
import { addModel, sha256 } from './support/models.js';
import { startS3, type S3Fixture } from './support/s3-fixture.js';

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
  ]);
  env = sb.env({
    AWS_ENDPOINT_URL_S3: s3.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: path.join(sb.dir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(sb.dir, 'no-aws-credentials'),
  });
});
afterAll(async () => {
  await sb.cleanup();
  await Promise.all([hub.close(), s3.close(), bytes.close()]);
});

describe('a normal run prints nothing but its output and its JSON records', () => {
  // In order: the first sync fetches from all three kinds of source, the rest find them in place.
  const runs: readonly (readonly string[])[] = [['sync'], ['sync'], ['sync', '--refresh'], ['plan'], ['status'], ['verify'], ['verify', '--full'], ['lock'], ['sync'], ['gc', '--dry-run'], ['gc']];
  for (const args of runs) {
    it(`modelsync ${args.join(' ')}`, async () => {
      const r = await runCli(args, env);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const records = jsonLines(r.stderr);
      expect(records.filter((rec) => (rec.level as number) >= 40)).toEqual([]);
      expect(r.stdout + r.stderr).not.toMatch(/warning|deprecat/i);
    });
  }
});
