/**
 * Issue 15: connections opened while the Hub lookups run (transfer/preconnect.ts, sources/hf.ts)
 * and the first wave of a file's chunks asking the Hub once. The stand-in holds its API answers
 * (hub.holdApi) so that "while the lookups run" is a state, not a race; each request records the
 * connection it came on, in the order the server accepted them. No timings.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { waitFor } from './support/cli-nodes.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256 } from './support/models.js';
import { startLevel } from '../src/transfer/host-limit.js';

const { hub, sandbox } = await useHubSandbox();

const MiB = 1024 * 1024;
/** A host's connections before anything is known about it, at the default --connections (64). */
const START = startLevel(64);

function resolves(): { url: string; conn: number }[] {
  return hub.stats.requests.filter((q) => q.host === 'hub' && q.url.includes('/resolve/'));
}

describe('connections opened ahead', () => {
  it('while the lookups run, the Hub gets one per file and the CDN it redirected to last time the host\'s count; every chunk comes over them', async () => {
    const sb = await sandbox(hub.endpoint);
    // Two 4 MiB chunks: several requests of the file start at once.
    const a = addModel(hub, 8 * MiB);
    await sb.writeManifest([{ source: a.uri, dest: 'checkpoints/a.safetensors' }]);
    hub.resetStats();
    const first = await runCli(['sync'], sb.env());
    expect(first.code).toBe(0);
    // The first wave of a file's requests asks the Hub once, and the others take its redirect.
    expect(resolves()).toHaveLength(1);

    const b = addModel(hub, 8 * MiB);
    await sb.writeManifest([
      { source: a.uri, dest: 'checkpoints/a.safetensors' },
      { source: b.uri, dest: 'checkpoints/b.safetensors' },
    ]);
    hub.resetStats();
    const cdnBefore = hub.stats.connections.cdn;
    const hubBefore = hub.stats.connections.hub;
    let release: () => void = () => undefined;
    hub.holdApi = new Promise<void>((r) => (release = r));
    const running = runCli(['sync'], sb.env());
    let cdnAtRelease: number;
    let hubAtRelease: number;
    try {
      await waitFor('connections to the CDN opened while the API call is held', () => hub.stats.connections.cdn - cdnBefore >= START || undefined);
      // One for b's resolve, beside the held API call's own.
      await waitFor('a connection to the Hub beside the API call', () => hub.stats.connections.hub - hubBefore >= 2 || undefined);
      expect(hub.stats.requests.filter((q) => q.host === 'cdn')).toEqual([]);
      expect(resolves()).toEqual([]);
    } finally {
      cdnAtRelease = hub.stats.connections.cdn;
      hubAtRelease = hub.stats.connections.hub;
      hub.holdApi = undefined;
      release();
    }
    const r = await running;
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/b.safetensors'))).toBe(b.sha256);
    expect(cdnAtRelease - cdnBefore).toBe(START);
    const cdn = hub.stats.requests.filter((q) => q.host === 'cdn');
    expect(cdn.length).toBeGreaterThanOrEqual(2);
    // Every chunk came over a connection that was open before the lookups answered.
    expect(cdn.filter((q) => q.conn <= cdnBefore || q.conn > cdnAtRelease)).toEqual([]);
    expect(resolves()).toHaveLength(1);
    expect(resolves().every((q) => q.conn > hubBefore && q.conn <= hubAtRelease)).toBe(true);
  });

  it('an offline sync opens nothing', async () => {
    const sb = await sandbox(hub.endpoint);
    const a = addModel(hub, 2 * MiB);
    await sb.writeManifest([{ source: a.uri, dest: 'checkpoints/a.safetensors' }]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    // The dest is gone, the blob is still in the store: resolved from the state DB and published again.
    await rm(path.join(sb.models, 'checkpoints/a.safetensors'));
    const cdnBefore = hub.stats.connections.cdn;
    const hubBefore = hub.stats.connections.hub;
    expect((await runCli(['sync', '--offline'], sb.env())).code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/a.safetensors'))).toBe(a.sha256);
    expect(hub.stats.connections.cdn).toBe(cdnBefore);
    expect(hub.stats.connections.hub).toBe(hubBefore);
  });
});
