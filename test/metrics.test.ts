/**
 * renderMetrics and Exposition (daemon/metrics.ts), read back by a strict parser of the
 * Prometheus text format: every family well-formed, the numbers those of the state they render.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Exposition, renderMetrics } from '../src/daemon/metrics.js';
import { DaemonState } from '../src/daemon/state.js';
import type { Entry, Manifest } from '../src/manifest/types.js';
import { REPO_ROOT } from './support/cli.js';
import { metricValue, parsePrometheus } from './support/prometheus.js';

function entry(index: number, dest: string, required: boolean): Entry {
  const url = `https://example.invalid/${dest}`;
  return { index, source: { kind: 'https', url, uri: url }, dest, sha256: 'ab'.repeat(32), size: 1000, allowPickle: false, required };
}

const manifest: Manifest = {
  path: '/etc/modelsync/m.yaml',
  entries: [entry(0, 'checkpoints/a.safetensors', true), entry(1, 'loras/b.safetensors', false), entry(2, 'vae/c.safetensors', true)],
  unplaced: [],
  folders: [],
  s3: { endpoint: undefined, region: undefined, pathStyle: undefined },
};

describe('renderMetrics', () => {
  it('renders the state it is given: entries by state and by required, counters, the last sync', () => {
    const state = new DaemonState('service', () => 0);
    state.setManifest(manifest);
    const [a, b, c] = manifest.entries as [Entry, Entry, Entry];
    state.events.entryState?.(a, 'present', { size: 1000 });
    state.events.cacheHit?.(a);
    state.events.entryState?.(b, 'downloading', { size: 1000, key: { algo: 'sha256', hex: 'ab'.repeat(32) } });
    state.events.bytes?.(400, { algo: 'sha256', hex: 'ab'.repeat(32) });
    state.events.retry?.(b.source.uri, 'HTTP 503', 10);
    state.events.entryState?.(c, 'failed', { error: 'nope' });
    let m = parsePrometheus(renderMetrics(state));
    expect(metricValue(m, 'modelsync_entries', { state: 'present' })).toBe(1);
    expect(metricValue(m, 'modelsync_entries', { state: 'downloading' })).toBe(1);
    expect(metricValue(m, 'modelsync_entries', { state: 'failed' })).toBe(1);
    expect(metricValue(m, 'modelsync_entries', { state: 'queued' })).toBe(0);
    expect(metricValue(m, 'modelsync_entries_verified', { required: 'true' })).toBe(1);
    expect(metricValue(m, 'modelsync_entries_verified', { required: 'false' })).toBe(0);
    expect(metricValue(m, 'modelsync_bytes_downloaded_total')).toBe(400);
    expect(metricValue(m, 'modelsync_cache_hits_total')).toBe(1);
    expect(metricValue(m, 'modelsync_download_retries_total')).toBe(1);
    // No sync finished yet: those families are there, with no sample.
    expect(m.get('modelsync_last_sync_success')?.samples).toEqual([]);
    // A service has no child: no ComfyUI families at all.
    expect([...m.keys()].some((k) => k.startsWith('modelsync_comfyui_'))).toBe(false);

    state.syncStarted('test');
    state.syncFinished('test', { ok: false, entries: [], bytesFetched: 400, durationMs: 2500 }, undefined);
    m = parsePrometheus(renderMetrics(state));
    expect(metricValue(m, 'modelsync_last_sync_success')).toBe(0);
    expect(metricValue(m, 'modelsync_last_sync_duration_seconds')).toBe(2.5);
    expect(metricValue(m, 'modelsync_syncs_total', { outcome: 'failed' })).toBe(1);
  });

  it('an entrypoint adds the child\'s families', () => {
    const state = new DaemonState('entrypoint', () => 0);
    state.setManifest(manifest);
    const m = parsePrometheus(renderMetrics(state));
    expect(metricValue(m, 'modelsync_comfyui_up')).toBe(0);
    expect(m.has('modelsync_comfyui_restarts_total')).toBe(true);
  });
});

describe('Exposition', () => {
  it('escapes help text and label values, and spells the special floats as Prometheus does', () => {
    const text = new Exposition()
      .family('x_total', 'counter', 'a \\ b\nnext line', [{ value: 3 }])
      .family('y', 'gauge', 'y', [
        { labels: { path: 'a "quoted"\\path\nline' }, value: Number.NaN },
        { labels: { path: 'up' }, value: Infinity },
        { labels: { path: 'down' }, value: -Infinity },
      ])
      .text();
    expect(text).toContain('# HELP x_total a \\\\ b\\nnext line\n');
    const m = parsePrometheus(text);
    expect(m.get('y')?.samples.map((s) => [s.labels.path, s.value])).toEqual([
      ['a "quoted"\\path\nline', Number.NaN],
      ['up', Infinity],
      ['down', -Infinity],
    ]);
  });
});

describe('docs/daemon.md and the families /metrics renders', () => {
  it('every family rendered is named in the docs, every name there is rendered, and a listed label takes exactly the values listed', async () => {
    const doc = await readFile(path.join(REPO_ROOT, 'docs', 'daemon.md'), 'utf8');
    const state = new DaemonState('entrypoint', () => 0);
    state.setManifest(manifest);
    state.events.mirrorFailure?.('s3://bucket/prefix/', 'E_RANGE');
    state.onDemand = () => ({ enabled: true, maxBytes: 1000, bytesUsed: 0, entries: 0, pinned: 0, evictions: 0, jobsRunning: 0, requests: { ok: 0, refused: 0 } });
    for (const step of ['manifestLoaded', 'requiredReady', 'comfySpawned', 'comfyAnswering'] as const) state.mark(step);
    state.syncStarted('test');
    state.syncFinished('test', { ok: true, entries: [], bytesFetched: 0, durationMs: 10 }, undefined);
    const rendered = parsePrometheus(renderMetrics(state));
    const documented = new Map<string, { label?: string; values?: string[] }>();
    // The docs' lists of families: each a paragraph that starts with "Metrics:".
    const lists = doc.split(/\n\n/).filter((p) => /^Metrics: /.test(p));
    expect(lists.length).toBeGreaterThan(1);
    for (const d of lists.join('\n').matchAll(/`(modelsync_[a-z_]+)(?:\{([a-z_]+)(?:="([^"]*)")?\})?`/g)) {
      documented.set(d[1] as string, { ...(d[2] === undefined ? {} : { label: d[2] }), ...(d[3] === undefined ? {} : { values: d[3].split('|') }) });
    }
    expect([...rendered.keys()].sort()).toEqual([...documented.keys()].sort());
    for (const [name, d] of documented) {
      const samples = rendered.get(name)?.samples ?? [];
      if (d.label === undefined) continue;
      for (const s of samples) expect(Object.keys(s.labels), name).toContain(d.label);
      if (d.values !== undefined) expect(samples.map((s) => s.labels[d.label as string]).sort(), name).toEqual([...d.values].sort());
    }
    expect(documented.get('modelsync_bytes_by_source_total')?.values).toEqual(['origin', 'mirror', 'volume']);
  });

  it('bytes by source, mirror misses and failures render what the sync events counted', () => {
    const state = new DaemonState('service', () => 0);
    state.setManifest(manifest);
    state.events.sourced?.({ origin: 100, mirror: 2000, volume: 30 });
    state.events.sourced?.({ origin: 0, mirror: 5, volume: 0 });
    state.events.mirrorMiss?.('s3://bucket/prefix/');
    state.events.mirrorFailure?.('s3://bucket/prefix/', 'E_HASH_MISMATCH');
    state.events.mirrorFailure?.('https://m.example/p/', 'E_HASH_MISMATCH');
    state.events.mirrorWrite?.('uploaded', 700);
    state.events.mirrorWrite?.('present', 0);
    const m = parsePrometheus(renderMetrics(state));
    expect(metricValue(m, 'modelsync_bytes_by_source_total', { source: 'origin' })).toBe(100);
    expect(metricValue(m, 'modelsync_bytes_by_source_total', { source: 'mirror' })).toBe(2005);
    expect(metricValue(m, 'modelsync_bytes_by_source_total', { source: 'volume' })).toBe(30);
    expect(metricValue(m, 'modelsync_mirror_misses_total')).toBe(1);
    expect(metricValue(m, 'modelsync_mirror_failures_total', { code: 'E_HASH_MISMATCH' })).toBe(2);
    expect(metricValue(m, 'modelsync_mirror_writes_total', { outcome: 'uploaded' })).toBe(1);
    expect(metricValue(m, 'modelsync_mirror_writes_total', { outcome: 'present' })).toBe(1);
    expect(metricValue(m, 'modelsync_mirror_write_bytes_total')).toBe(700);
  });
});
