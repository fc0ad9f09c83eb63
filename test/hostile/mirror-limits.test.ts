/**
 * Mirrors (issue 17) are remote parties too, and came after issue 13's classes 7-9 were fixed:
 * each mirror is held to the limits an origin is (the minimum rate, the bytes fetched per entry,
 * the cap on a stream with no size), on a budget of its own, so that a mirror that trickles,
 * starts over for ever or never ends falls through to the origin, which still has all of its.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, type CliResult } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import type { BlobFaults } from '../support/hub-types.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { logRecords } from '../support/json-lines.js';
import { addModel, fileSha256, sha256, type TestModel } from '../support/models.js';
import { makeSafetensors } from '../support/safetensors.js';

const { hub, sandbox } = await useHubSandbox();

function warnings(r: CliResult): Record<string, unknown>[] {
  return logRecords(r.stderr).filter((w) => w.level === 40 && w.mirror !== undefined);
}

/** An https mirror holding `body` under the blob's name, served with `faults`. */
async function mirrorOf(m: { sha256: string }, body: Buffer, faults: BlobFaults): Promise<{ web: ByteServer; uri: string; path: string }> {
  const p = `/m/sha256/${m.sha256}`;
  const web = await startByteServer({ files: { [p]: body }, faults: { [p]: faults } });
  return { web, uri: `${web.url}/m/`, path: p };
}

async function syncHub(m: TestModel, mirror: string, extra: Record<string, string>): Promise<{ r: CliResult; file: string }> {
  const sb = await sandbox(hub.endpoint);
  await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirrors: [mirror] });
  const r = await runCli(['sync'], sb.env({ MODELSYNC_RETRY_ATTEMPTS: '2', ...extra }), { timeoutMs: 50_000 });
  return { r, file: path.join(sb.models, 'checkpoints/m.safetensors') };
}

describe('a mirror is held to the limits an origin is (issue 13, classes 7-9)', () => {
  it('a mirror trickling the blob is cut off by the minimum rate; the origin serves it, verified', async () => {
    const m = addModel(hub, 60_000);
    const { web, uri } = await mirrorOf(m, m.content, { bytesPerSecond: 2 });
    try {
      const { r, file } = await syncHub(m, uri, { MODELSYNC_MIN_RATE_WINDOW: '1' });
      expect(r.signal).toBeNull();
      expect(r.code).toBe(0);
      expect(await fileSha256(file)).toBe(m.sha256);
      expect(hub.stats.bytesServed.get(m.sha256)).toBeGreaterThan(0);
      expect(warnings(r).map((w) => w.code)).toContain('E_TOO_SLOW');
    } finally {
      await web.close();
    }
  });

  it('a mirror without ranges whose body is always cut short gives up after bounded attempts; the origin serves', async () => {
    const m = addModel(hub, 60_000);
    const { web, uri, path: p } = await mirrorOf(m, m.content, { ignoreRange: true, shorterBody: { times: 1_000_000 } });
    try {
      const { r, file } = await syncHub(m, uri, {});
      expect(r.signal).toBeNull();
      expect(r.code).toBe(0);
      expect(await fileSha256(file)).toBe(m.sha256);
      expect(hub.stats.bytesServed.get(m.sha256)).toBeGreaterThan(0);
      // The probe, then the attempts (MODELSYNC_RETRY_ATTEMPTS=2) and the fetch budget: a few GETs, not hundreds.
      expect(web.requests.filter((q) => q.path === p).length).toBeLessThanOrEqual(8);
      expect(warnings(r).length).toBeGreaterThan(0);
    } finally {
      await web.close();
    }
  });

  it('a mirror streaming without end and without a size stops at MODELSYNC_MAX_UNSIZED; the origin serves', async () => {
    // An https origin and an entry with a sha256 but no size: nothing says how big the blob is.
    const content = makeSafetensors(50_000, 77);
    const hex = sha256(content);
    const origin = await startByteServer({ files: { '/o.safetensors': content } });
    const { web, uri } = await mirrorOf({ sha256: hex }, content, { endlessBody: true });
    try {
      const sb = await sandbox(hub.endpoint);
      await sb.writeManifest([{ source: `${origin.url}/o.safetensors`, dest: 'checkpoints/o.safetensors', sha256: hex }], { mirrors: [uri] });
      const r = await runCli(['sync'], sb.env({ MODELSYNC_RETRY_ATTEMPTS: '2', MODELSYNC_MAX_UNSIZED: '200000' }), { timeoutMs: 50_000 });
      expect(r.signal).toBeNull();
      expect(r.code).toBe(0);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/o.safetensors'))).toBe(hex);
      expect(origin.requests.length).toBeGreaterThan(0);
      expect(warnings(r).map((w) => w.code)).toContain('E_TOO_LARGE');
      // Two one-byte probes, then one stream cut at the cap: past its room it is not retried (and the mirror is benched).
      expect(web.requests.length).toBeLessThanOrEqual(3);
    } finally {
      await Promise.all([web.close(), origin.close()]);
    }
  });
});
