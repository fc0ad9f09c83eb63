/**
 * hostile-world.md, bad input: formats. A safetensors file whose header is cut or inconsistent
 * is rejected as corrupt even when its hash matches (the hash only proves it is what the source
 * holds); pickle formats need `allow_pickle`. Unit-level pickle refusal: test/manifest.test.ts.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { makeSafetensors } from '../support/hub.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { exists, sha256 } from '../support/models.js';

const good = makeSafetensors(120_000, 5);
const headerLen = Number(good.readBigUInt64LE(0));

function withHeader(header: string, payload: number): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
  return Buffer.concat([len, Buffer.from(header), Buffer.alloc(payload, 7)]);
}

const BAD: Record<string, { bytes: Buffer; why: RegExp }> = {
  'cut inside the header': { bytes: good.subarray(0, 8 + Math.floor(headerLen / 2)), why: /header length \d+ runs past the end/ },
  'cut inside the tensor data': { bytes: good.subarray(0, good.length - 1000), why: /tensor data ends at \d+ but the file has \d+ bytes/ },
  'data longer than the header says': { bytes: Buffer.concat([good, Buffer.alloc(512)]), why: /tensor data ends at/ },
  'header that is not JSON': { bytes: withHeader('{"t": {"dtype": "U8", ', 64), why: /header is not JSON/ },
  'header that is a JSON array': { bytes: withHeader('[1, 2, 3]', 64), why: /header is not a JSON object/ },
  'offsets that run backwards': { bytes: withHeader('{"t": {"dtype": "U8", "shape": [64], "data_offsets": [64, 0]}}', 64), why: /tensor "t" has bad data_offsets/ },
  'an insane header length': { bytes: Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00]), Buffer.alloc(100)]), why: /header length \d+ is not sane/ },
  'shorter than the length prefix': { bytes: Buffer.from([1, 2, 3]), why: /shorter than the 8-byte header length/ },
};

let web: ByteServer;
const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;

beforeAll(async () => {
  web = await startByteServer({ files: Object.fromEntries(Object.entries(BAD).map(([k, v]) => [`/${encodeURIComponent(k)}.safetensors`, v.bytes])) });
});
afterAll(async () => {
  await web.close();
});

interface JsonReport {
  entries: { dest: string; state: string; error?: { code: string; message: string } }[];
}

async function expectNothingKept(): Promise<void> {
  const store = path.join(sb.models, '.modelsync-store');
  expect(await readdir(path.join(store, 'tmp'))).toEqual([]);
  expect(await exists(path.join(store, 'blobs', 'sha256'))).toBe(false);
  expect(await exists(path.join(sb.models, 'checkpoints'))).toBe(false);
}

describe('format safety (hostile-world.md, bad input)', () => {
  it('safetensors with a cut or inconsistent header are rejected as corrupt though their sha256 matches; nothing published', async () => {
    sb = await sandbox();
    const names = Object.keys(BAD);
    await sb.writeManifest(names.map((k, i) => ({ source: `${web.url}/${encodeURIComponent(k)}.safetensors`, dest: `checkpoints/bad${i}.safetensors`, sha256: sha256((BAD[k] as { bytes: Buffer }).bytes) })));
    const r = await runCli(['sync', '--json'], sb.env());
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as JsonReport;
    names.forEach((k, i) => {
      const e = report.entries[i];
      expect(e?.state, k).toBe('failed');
      expect(e?.error?.code, k).toBe('E_CORRUPT');
      expect(e?.error?.message, k).toMatch(/not a valid safetensors file/);
      expect(e?.error?.message, k).toMatch((BAD[k] as { why: RegExp }).why);
    });
    await expectNothingKept();
  });

  it('a broken safetensors on the Hub (whose own hash matches it) is rejected too', async () => {
    sb = await sandbox(hub.endpoint);
    const cut = good.subarray(0, good.length - 4096);
    hub.addRepo({ id: 'test-org/broken-upload', files: [{ path: 'model.safetensors', content: cut }] });
    await sb.writeManifest([{ source: 'hf://test-org/broken-upload/model.safetensors', dest: 'checkpoints/broken.safetensors' }]);
    const r = await runCli(['sync', '--json'], sb.env());
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as JsonReport;
    expect(report.entries[0]?.error?.code).toBe('E_CORRUPT');
    await expectNothingKept();
  });

  it('a .safetensors entry that is not one fails as soon as its header is in, not after the whole file; the summary counts what came', async () => {
    sb = await sandbox(hub.endpoint);
    const size = 6 * 1024 * 1024;
    const html = Buffer.concat([Buffer.from('<!doctype html><html><body>Sign in to download</body></html>\n'), Buffer.alloc(size, 0x20)]).subarray(0, size);
    // A sane length, then a header that is not JSON: decided at byte 8 + 4000.
    const notJson = Buffer.concat([withHeader(`{"t": ${'x'.repeat(3990)}`, 0), Buffer.alloc(size, 1)]).subarray(0, size);
    const files = { html, notJson };
    for (const [name, content] of Object.entries(files)) {
      hub.addRepo({ id: `test-org/not-safetensors-${name}`, files: [{ path: 'model.safetensors', content }] });
      // Slow enough that the whole file would take 20 s.
      hub.setFaults(sha256(content), { bytesPerSecond: 300_000 });
    }
    await sb.writeManifest(Object.keys(files).map((name) => ({ source: `hf://test-org/not-safetensors-${name}/model.safetensors`, dest: `checkpoints/${name}.safetensors` })));
    const r = await runCli(['sync', '--json'], sb.env());
    hub.clearFaults();
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as JsonReport & { bytesFetched: number };
    expect(report.entries.map((e) => e.error?.code)).toEqual(['E_CORRUPT', 'E_CORRUPT']);
    expect(report.entries[0]?.error?.message).toMatch(/header length \d+ is not sane/);
    expect(report.entries[1]?.error?.message).toMatch(/header is not JSON/);
    for (const content of Object.values(files)) expect(hub.stats.bytesServed.get(sha256(content)) ?? 0).toBeLessThan(size / 4);
    // What did come is counted: a failed sync does not say "fetched 0 B".
    expect(report.bytesFetched).toBeGreaterThan(0);
    await expectNothingKept();
  });

  it('.ckpt, .pt and .bin without allow_pickle: exit 2 with the warning that pickle runs code, nothing fetched', async () => {
    sb = await sandbox();
    const bytes = Buffer.from('not really a pickle');
    const pickles = ['checkpoints/a.ckpt', 'checkpoints/b.pt', 'checkpoints/c.bin'];
    await sb.writeManifest(pickles.map((dest) => ({ source: `${web.url}/x/${path.basename(dest)}`, dest, sha256: sha256(bytes) })));
    web.requests.length = 0;
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(2);
    for (let i = 0; i < pickles.length; i++) expect(r.stderr).toMatch(new RegExp(`models\\[${i}\\]\\.allow_pickle: .*pickle.*arbitrary code`));
    expect(web.requests).toEqual([]);
    expect(await exists(path.join(sb.models, 'checkpoints'))).toBe(false);
  });
});
