/**
 * Issue 15's mechanisms end to end, through the CLI against the Hub stand-in: work stealing at
 * the end of a file (chunks.ts, download.ts), and the per-host connection count (budget.ts,
 * host-limit.ts) under its caps and a 429. No timings: faults pin where requests stop.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { jsonLines } from './support/json-lines.js';
import { addModel, fileSha256 } from './support/models.js';

const { hub, sandbox } = await useHubSandbox();

const MiB = 1024 * 1024;

/** [start, end] of a Range header, inclusive as sent. */
function span(range: string | undefined): [number, number] {
  const m = /^bytes=(\d+)-(\d+)$/.exec(range ?? '');
  if (!m) throw new Error(`unexpected range ${range}`);
  return [Number(m[1]), Number(m[2])];
}

function cdnGets(): { range: [number, number]; inFlight: number; status: number }[] {
  return hub.stats.requests.filter((q) => q.host === 'cdn' && q.method === 'GET').map((q) => ({ range: span(q.range), inFlight: q.inFlight, status: q.status }));
}

describe('work stealing at the end of a file', () => {
  it('a connection with nothing left splits the running piece with the most left; the file reassembles exactly, with a cut in the split-off half', async () => {
    const sb = await sandbox(hub.endpoint);
    // Two 4 MiB chunks over two connections.
    const m = addModel(hub, 8 * MiB - 1024);
    const size = m.content.length;
    expect(size).toBeLessThanOrEqual(8 * MiB);
    const stallAt = 5 * MiB;
    const cutAt = size - MiB / 2;
    // Chunk 1's answer stops at 5 MiB (until the idle timeout); whoever fetches past cutAt first is cut there.
    hub.setFaults(m.sha256, { stallAtOffset: { offset: stallAt, times: 1 }, cutAtOffset: { offset: cutAt, times: 1 } });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/s.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync', '--chunk-size', '4M', '--connections', '2'], sb.env());
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/s.safetensors'))).toBe(m.sha256);
    const gets = cdnGets().map((g) => g.range);
    // The connection that finished chunk 0 took the back half of chunk 1 (from where its stalled
    // request stood, at most 5 MiB, to the end), rather than leaving it to the stalled one.
    const stolen = gets.find(([s, e]) => s > 4 * MiB && s !== stallAt && e === size - 1 && s < cutAt);
    expect(stolen).toBeDefined();
    const mid = (stolen as [number, number])[0];
    expect(mid).toBeGreaterThanOrEqual(5 * MiB);
    expect(mid % 4096).toBe(0);
    // The split-off half was cut at cutAt and resumed from there.
    expect(gets).toContainEqual([cutAt, size - 1]);
    // The stalled request was retried for its own half only: up to the split, not to the end.
    expect(gets).toContainEqual([stallAt, mid - 1]);
  });

  it('no split below 2 x 1 MiB left: small files are not cut up', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 3 * MiB);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/t.safetensors' }]);
    hub.resetStats();
    // One chunk of 4 MiB or more: a second connection could split it once, at about the middle.
    const r = await runCli(['sync', '--connections', '4'], sb.env());
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/t.safetensors'))).toBe(m.sha256);
    const gets = cdnGets().map((g) => g.range);
    expect(gets.length).toBeLessThanOrEqual(2);
    for (const [s] of gets) if (s > 0) expect(m.content.length - s).toBeGreaterThanOrEqual(MiB);
    expect(Math.min(...gets.map(([s]) => s))).toBe(0);
  });
});

describe('connections per host', () => {
  it('never more at once than --host-connections, within --connections', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 4 * MiB);
    // Paced, so that requests overlap: sixteen 256 KiB chunks, each a quarter second or more.
    hub.setFaults(m.sha256, { bytesPerSecond: 1_000_000 });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/c.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync', '--chunk-size', '256K', '--connections', '8', '--host-connections', '3'], sb.env({ MODELSYNC_LOG_LEVEL: 'debug' }));
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/c.safetensors'))).toBe(m.sha256);
    const gets = cdnGets();
    expect(gets.length).toBeGreaterThanOrEqual(16);
    expect(Math.max(...gets.map((g) => g.inFlight))).toBe(3);
    const changes = jsonLines(r.stderr).filter((l) => l.msg === 'connections to a host changed');
    expect(changes.every((l) => typeof l.connections === 'number' && l.connections <= 3)).toBe(true);
  });

  it('a 429 halves the connections to that host for what is left of the download', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 4 * MiB);
    // The first CDN request is refused with Retry-After: 0; the others of its wave are served.
    hub.setFaults(m.sha256, { bytesPerSecond: 1_000_000, rateLimit: { times: 1, retryAfter: '0' } });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/l.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync', '--chunk-size', '256K', '--connections', '8'], sb.env({ MODELSYNC_LOG_LEVEL: 'debug' }));
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/l.safetensors'))).toBe(m.sha256);
    const host = new URL(hub.endpoint).host;
    const changes = jsonLines(r.stderr).filter((l) => l.msg === 'connections to a host changed');
    expect(changes).toEqual([expect.objectContaining({ host, connections: 4, was: 8, why: 'throttled' })]);
    const gets = cdnGets();
    const refused = gets.findIndex((g) => g.status === 429);
    expect(refused).toBeGreaterThanOrEqual(0);
    // Once the wave in flight at the 429 had drained, never more than 4 at once.
    const later = gets.slice(refused + 8);
    expect(later.length).toBeGreaterThan(0);
    expect(Math.max(...later.map((g) => g.inFlight))).toBeLessThanOrEqual(4);
  });
});
