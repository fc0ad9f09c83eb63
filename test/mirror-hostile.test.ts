/**
 * Issue 17: "a mirror's answers are as untrusted as the origin's". Each lie a mirror can tell in
 * a body (a Content-Range for other bytes, a body that never ends, a trickle) or in a redirect
 * (https to plain http elsewhere), from an https:// mirror and from an s3:// one, is met as an
 * origin's would be: ranges refused for one stream, a body cut at its range's end, a trickle cut
 * by the rate floor, the redirect not followed. What is left is either the mirror's bytes that
 * hash to the blob's name or a fall-through to the origin, and the store holds nothing else.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from './support/cli.js';
import { startByteServer } from './support/byte-server.js';
import type { BlobFaults } from './support/hub-types.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { logRecords } from './support/json-lines.js';
import { addModel, fileSha256 } from './support/models.js';
import { s3Env, useS3, type S3BodyFault } from './support/s3-fixture.js';
import { makeSelfSignedCert } from './support/tls-cert.js';

const BUCKET = 'hostile-mirror';
const PREFIX = 'modelsync/';
const SIZE = 600_000;
const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET]);
let sb: Sandbox;
const certDir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-mirror-tls-'));
const cert = makeSelfSignedCert(certDir);

afterAll(async () => {
  await rm(certDir, { recursive: true, force: true });
});
beforeEach(async () => {
  sb = await sandbox(hub.endpoint);
  hub.resetStats();
});

/** A trickle is cut by the rate floor within one window (a second here), then the origin serves. */
function env(extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({
    ...s3Env(s3, sb.dir),
    MODELSYNC_RETRY_ATTEMPTS: '2',
    MODELSYNC_MIN_RATE: '64K',
    MODELSYNC_MIN_RATE_WINDOW: '1',
    MODELSYNC_LOG_FORMAT: 'json',
    ...extra,
  });
}

function warnings(stderr: string): Record<string, unknown>[] {
  return logRecords(stderr).filter((r) => r.level === 40 && r.mirror !== undefined);
}

/** Every committed blob hashes to its name; no partial, journal or quarantined blob is left. */
async function storeIsClean(): Promise<void> {
  const store = path.join(sb.models, '.modelsync-store');
  const blobs = path.join(store, 'blobs', 'sha256');
  for (const fan of await readdir(blobs).catch(() => [])) {
    for (const hex of await readdir(path.join(blobs, fan))) {
      expect(createHash('sha256').update(await readFile(path.join(blobs, fan, hex))).digest('hex'), `blob ${hex}`).toBe(hex);
    }
  }
  expect(await readdir(path.join(store, 'tmp')).catch(() => [])).toEqual([]);
  expect(await readdir(path.join(store, 'quarantine')).catch(() => [])).toEqual([]);
}

type Outcome =
  /** The lie is survived on the mirror itself: every byte kept hashed to the blob, none from the origin. */
  | 'mirror'
  /** The mirror is given up (a warning with this code) and the origin serves. */
  | { readonly code: string };

const HTTPS_LIES: readonly { name: string; faults: BlobFaults; outcome: Outcome; oneStream?: true }[] = [
  // Its ranges are refused (no chunk is placed at an offset it did not come from): one stream instead.
  { name: 'a Content-Range for other bytes', faults: { wrongContentRange: { times: 1_000 } }, outcome: 'mirror', oneStream: true },
  { name: 'a Content-Range for other bytes, then wrong bytes as one stream', faults: { wrongContentRange: { times: 1_000 }, flipByteAt: { offset: 300_000, times: 1_000 } }, outcome: { code: 'E_HASH_MISMATCH' }, oneStream: true },
  // Each range is read to its end and no further: the garbage after it never reaches the partial.
  { name: 'a body that never ends', faults: { endlessBody: true }, outcome: 'mirror' },
  { name: 'a trickle', faults: { bytesPerSecond: 4_000 }, outcome: { code: 'E_TOO_SLOW' } },
];

function expectOutcome(outcome: Outcome, stderr: string, originBytes: number): void {
  if (outcome === 'mirror') {
    expect(originBytes).toBe(0);
    expect(warnings(stderr)).toEqual([]);
  } else {
    expect(originBytes).toBeGreaterThan(0);
    expect(warnings(stderr).map((w) => w.code)).toContain(outcome.code);
  }
}

describe("a mirror's answers are as untrusted as the origin's", () => {
  for (const lie of HTTPS_LIES) {
    it(`an https:// mirror, ${lie.name}: none of it in the store (${lie.outcome === 'mirror' ? 'the mirror\'s verified bytes' : 'the origin serves'})`, async () => {
      const m = addModel(hub, SIZE);
      const key = `/m/sha256/${m.sha256}`;
      const web = await startByteServer({ files: { [key]: m.content }, faults: { [key]: lie.faults } });
      try {
        await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [`${web.url}/m/`] });
        const r = await runCli(['sync', '--chunk-size', '64K'], env());
        expect(r.stderr).not.toContain('internal error');
        expect(r.code).toBe(0);
        expect(web.requests.length).toBeGreaterThan(0);
        if (lie.oneStream) expect(web.requests.some((q) => q.range === undefined)).toBe(true);
        expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
        expectOutcome(lie.outcome, r.stderr, hub.stats.bytesServed.get(m.sha256) ?? 0);
        await storeIsClean();
      } finally {
        await web.close();
      }
    });
  }

  it.skipIf(cert === undefined)('an https:// mirror that redirects to plain http elsewhere is not followed: the origin serves', async () => {
    const m = addModel(hub, SIZE);
    const elsewhere = await startByteServer({ host: '127.0.0.2', files: { '/x': m.content } });
    const web = await startByteServer({ ...(cert === undefined ? {} : { tls: cert }), files: {}, redirects: { [`/m/sha256/${m.sha256}`]: `${elsewhere.url}/x` } });
    try {
      await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [`${web.url.replace('http://', 'https://')}/m/`] });
      const r = await runCli(['sync'], env({ NODE_EXTRA_CA_CERTS: cert?.certPath ?? '' }));
      expect(r.code).toBe(0);
      expect(web.requests.length).toBeGreaterThan(0);
      expect(elsewhere.requests).toEqual([]);
      expect(warnings(r.stderr).map((w) => w.code)).toContain('E_INSECURE_REDIRECT');
      expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
      expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length);
      await storeIsClean();
    } finally {
      await web.close();
      await elsewhere.close();
    }
  });

  const S3_LIES: readonly { name: string; fault: S3BodyFault; outcome: Outcome; oneStream?: true; wrongBytes?: true }[] = [
    { name: 'a Content-Range for other bytes', fault: { shiftContentRange: 1 }, outcome: 'mirror', oneStream: true },
    { name: 'a Content-Range for other bytes over an object with wrong bytes', fault: { shiftContentRange: 1 }, outcome: { code: 'E_HASH_MISMATCH' }, oneStream: true, wrongBytes: true },
    { name: 'a body that never ends', fault: { endless: true }, outcome: 'mirror' },
    { name: 'a trickle', fault: { bytesPerSecond: 4_000 }, outcome: { code: 'E_TOO_SLOW' } },
  ];
  for (const lie of S3_LIES) {
    it(`an s3:// mirror, ${lie.name}: none of it in the store (${lie.outcome === 'mirror' ? 'the mirror\'s verified bytes' : 'the origin serves'})`, async () => {
      const m = addModel(hub, SIZE);
      const objectKey = `${PREFIX}sha256/${m.sha256}`;
      const body = Buffer.from(m.content);
      if (lie.wrongBytes) body[300_000] = (body[300_000] ?? 0) ^ 0xff;
      await s3.put(BUCKET, objectKey, body);
      s3.bodyFault = (q) => (q.key === objectKey ? lie.fault : undefined);
      await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [`s3://${BUCKET}/${PREFIX}`] });
      const r = await runCli(['sync', '--chunk-size', '64K'], env());
      expect(r.stderr).not.toContain('internal error');
      expect(r.code).toBe(0);
      expect(s3.gets(objectKey).length).toBeGreaterThan(0);
      if (lie.oneStream) expect(s3.gets(objectKey).some((g) => g.range === undefined)).toBe(true);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
      expectOutcome(lie.outcome, r.stderr, hub.stats.bytesServed.get(m.sha256) ?? 0);
      await storeIsClean();
    });
  }
});
