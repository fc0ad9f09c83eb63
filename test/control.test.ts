import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/log.js';
import { startControl, type ControlServer } from '../src/daemon/control.js';
import { DaemonState } from '../src/daemon/state.js';
import type { SyncOutcome } from '../src/daemon/sync-runner.js';
import type { Entry, Manifest } from '../src/manifest/types.js';
import { rawRequest } from './support/http-get.js';
import { metricValue as value, parsePrometheus } from './support/prometheus.js';

function entry(index: number, dest: string, required: boolean): Entry {
  const url = `https://example.invalid/${dest}`;
  return { index, source: { kind: 'https', url, uri: url }, dest, sha256: 'ab'.repeat(32), size: 1000, allowPickle: false, required };
}

function manifest(entries: Entry[]): Manifest {
  return { path: '/etc/modelsync/manifest.yaml', entries, unplaced: [], folders: [], s3: { endpoint: undefined, region: undefined, pathStyle: undefined } };
}

let server: ControlServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('control API', () => {
  it('serves Prometheus text that a strict parser accepts, with the cold-start timeline', async () => {
    const state = new DaemonState('entrypoint');
    const req = entry(0, 'checkpoints/a "quoted" \\ name.safetensors', true);
    const opt = entry(1, 'loras/b.safetensors', false);
    state.setManifest(manifest([req, opt]));
    state.mark('manifestLoaded');
    state.syncStarted('startup');
    state.events.cacheHit?.(req);
    state.events.entryState?.(req, 'present', { size: 1000 });
    state.events.entryState?.(opt, 'downloading', { size: 1000, key: { algo: 'sha256', hex: 'cd'.repeat(32) } });
    state.events.bytes?.(400, { algo: 'sha256', hex: 'cd'.repeat(32) });
    state.events.verifyFailure?.(opt.source.uri);
    state.events.retry?.(opt.source.uri, 'reset', 100);
    state.mark('requiredReady');
    state.childSpawned(4242);
    state.childAnswering();
    state.comfy.restarts = 2;
    server = await startControl({ host: '127.0.0.1', port: 0 }, { state, resync: () => Promise.reject(new Error('unused')) }, silentLogger());
    const res = await rawRequest(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    const m = parsePrometheus(res.body.toString());
    expect(value(m, 'modelsync_bytes_downloaded_total')).toBe(400);
    expect(value(m, 'modelsync_download_throughput_bytes_per_second')).toBeGreaterThan(0);
    expect(value(m, 'modelsync_entries', { state: 'present' })).toBe(1);
    expect(value(m, 'modelsync_entries', { state: 'downloading' })).toBe(1);
    expect(value(m, 'modelsync_entries', { state: 'failed' })).toBe(0);
    expect(value(m, 'modelsync_verify_failures_total')).toBe(1);
    expect(value(m, 'modelsync_cache_hits_total')).toBe(1);
    expect(value(m, 'modelsync_download_retries_total')).toBe(1);
    expect(value(m, 'modelsync_comfyui_restarts_total')).toBe(2);
    expect(value(m, 'modelsync_comfyui_up')).toBe(1);
    expect(value(m, 'modelsync_ready')).toBe(1);
    expect(value(m, 'modelsync_sync_in_progress')).toBe(1);
    expect(m.get('modelsync_syncs_total')?.type).toBe('counter');
    const phases = m.get('modelsync_cold_start_seconds')?.samples.map((s) => s.labels.phase);
    expect(phases).toEqual(['manifest_loaded', 'required_models_ready', 'comfyui_spawned', 'comfyui_answering']);
    for (const s of m.get('modelsync_cold_start_seconds')?.samples ?? []) expect(s.value).toBeGreaterThan(0);

    state.syncFinished('startup', { ok: true, entries: [], bytesFetched: 400, durationMs: 1500 }, undefined);
    const after = parsePrometheus((await rawRequest(`${server.url}/metrics`)).body.toString());
    expect(value(after, 'modelsync_syncs_total', { outcome: 'ok' })).toBe(1);
    expect(value(after, 'modelsync_last_sync_duration_seconds')).toBe(1.5);
  });

  it('the strict parser refuses what Prometheus would', () => {
    expect(() => parsePrometheus('a 1')).toThrow(/newline/);
    expect(() => parsePrometheus('a 1\n')).toThrow(/outside its family/);
    expect(() => parsePrometheus('# HELP a x\n# TYPE a gauge\na{b="c} 1\n')).toThrow(/bad label/);
    expect(() => parsePrometheus('# HELP a x\n# TYPE a counter\na 1\n')).toThrow(/_total/);
    expect(() => parsePrometheus('# HELP a x\n# TYPE a gauge\na one\n')).toThrow(/bad value/);
  });

  it('answers /healthz, /readyz and /status from the state', async () => {
    const state = new DaemonState('entrypoint');
    const req = entry(0, 'checkpoints/a.safetensors', true);
    state.setManifest(manifest([req, entry(1, 'loras/b.safetensors', false)]));
    server = await startControl({ host: '127.0.0.1', port: 0 }, { state, resync: () => Promise.reject(new Error('unused')) }, silentLogger());
    const get = (p: string): Promise<{ status: number; body: string }> => rawRequest(server?.url + p).then((r) => ({ status: r.status, body: r.body.toString() }));

    expect((await get('/healthz')).status).toBe(200);
    const notReady = await get('/readyz');
    expect(notReady.status).toBe(503);
    expect(notReady.body).toBe('not ready: waiting for 1 required model before ComfyUI starts: checkpoints/a.safetensors (pending)\n');
    state.events.entryState?.(req, 'published', { size: 1000 });
    expect((await get('/readyz')).body).toBe('not ready: ComfyUI has not been started yet\n');
    state.childSpawned(1);
    state.childAnswering();
    expect((await get('/readyz')).status).toBe(200);
    state.comfy.degraded = true;
    state.comfy.restarts = 5;
    const sick = await get('/healthz');
    expect(sick.status).toBe(503);
    expect(sick.body).toMatch(/crash-looping \(5 restarts so far\)/);

    const status = JSON.parse((await get('/status')).body) as { mode: string; healthy: boolean; comfyui: { phase: string; pid: number }; entries: { dest: string; state: string; verified: boolean; required: boolean; progress: number }[] };
    expect(status.mode).toBe('entrypoint');
    expect(status.healthy).toBe(false);
    expect(status.comfyui).toMatchObject({ phase: 'running', pid: 1 });
    expect(status.entries).toEqual([
      // The engine's `published` is `present` here: one word for a model in place.
      expect.objectContaining({ dest: 'checkpoints/a.safetensors', state: 'present', verified: true, required: true, progress: 1 }),
      expect.objectContaining({ dest: 'loras/b.safetensors', state: 'pending', verified: false, required: false, progress: 0 }),
    ]);
    expect((await get('/nope')).status).toBe(404);
    expect((await rawRequest(`${server.url}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('POST /resync answers with the outcome: 200 when it succeeded, 500 when not', async () => {
    const state = new DaemonState('service');
    let outcome: SyncOutcome = { ok: true, reason: 'resync requested', report: { ok: true, entries: [], bytesFetched: 0, durationMs: 3 } };
    server = await startControl({ host: '127.0.0.1', port: 0 }, { state, resync: () => Promise.resolve(outcome) }, silentLogger());
    const ok = await rawRequest(`${server.url}/resync`, { method: 'POST' });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body.toString())).toMatchObject({ ok: true, reason: 'resync requested' });
    outcome = { ok: false, reason: 'resync requested', error: { code: 'E_NO_SPACE', message: 'not enough free space' } };
    const bad = await rawRequest(`${server.url}/resync`, { method: 'POST' });
    expect(bad.status).toBe(500);
    expect(JSON.parse(bad.body.toString())).toMatchObject({ ok: false, error: { code: 'E_NO_SPACE' } });
    expect((await rawRequest(`${server.url}/resync`)).status).toBe(405);
  });

  it('refuses a control address in use with a clear error', async () => {
    const state = new DaemonState('service');
    server = await startControl({ host: '127.0.0.1', port: 0 }, { state, resync: () => Promise.reject(new Error('unused')) }, silentLogger());
    const port = Number(new URL(server.url).port);
    await expect(startControl({ host: '127.0.0.1', port }, { state, resync: () => Promise.reject(new Error('unused')) }, silentLogger())).rejects.toMatchObject({
      code: 'E_DAEMON',
      message: expect.stringMatching(/EADDRINUSE.*another modelsync/) as unknown,
    });
  });
});
