import type { DaemonState, StatusState } from './state.js';

type Kind = 'counter' | 'gauge';
type Labels = Readonly<Record<string, string>>;

const ENTRY_STATES: readonly StatusState[] = ['pending', 'present', 'resolving', 'queued', 'downloading', 'waiting-peer', 'verifying', 'failed'];

const TIMELINE: readonly { key: 'manifestLoaded' | 'requiredReady' | 'comfySpawned' | 'comfyAnswering'; phase: string }[] = [
  { key: 'manifestLoaded', phase: 'manifest_loaded' },
  { key: 'requiredReady', phase: 'required_models_ready' },
  { key: 'comfySpawned', phase: 'comfyui_spawned' },
  { key: 'comfyAnswering', phase: 'comfyui_answering' },
];

/** Prometheus text exposition (format 0.0.4): HELP and TYPE once per family, then samples. */
export class Exposition {
  private readonly out: string[] = [];

  family(name: string, kind: Kind, help: string, samples: readonly { labels?: Labels; value: number }[]): this {
    this.out.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${kind}`);
    for (const s of samples) this.out.push(`${name}${labelText(s.labels)} ${number(s.value)}`);
    return this;
  }

  text(): string {
    return `${this.out.join('\n')}\n`;
  }
}

function labelText(labels: Labels | undefined): string {
  if (!labels || Object.keys(labels).length === 0) return '';
  const esc = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
  return `{${Object.entries(labels)
    .map(([k, v]) => `${k}="${esc(v)}"`)
    .join(',')}}`;
}

function number(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? '+Inf' : '-Inf';
  return String(v);
}

/** GET /metrics. */
export function renderMetrics(state: DaemonState): string {
  const c = state.counters;
  const byState = new Map<string, number>(ENTRY_STATES.map((s) => [s, 0]));
  for (const e of state.entries.values()) byState.set(e.state, (byState.get(e.state) ?? 0) + 1);
  const x = new Exposition()
    .family('modelsync_bytes_downloaded_total', 'counter', 'Bytes received from origins (model content).', [{ value: c.bytesDownloaded }])
    .family('modelsync_download_throughput_bytes_per_second', 'gauge', 'Download rate over the last 10 seconds.', [{ value: state.throughput() }])
    .family('modelsync_entries', 'gauge', 'Manifest entries by sync state.', [...byState].map(([s, n]) => ({ labels: { state: s }, value: n })))
    .family('modelsync_entries_verified', 'gauge', 'Manifest entries present and verified.', [
      { labels: { required: 'true' }, value: [...state.entries.values()].filter((e) => e.required && e.verified).length },
      { labels: { required: 'false' }, value: [...state.entries.values()].filter((e) => !e.required && e.verified).length },
    ])
    .family('modelsync_bytes_by_source_total', 'counter', 'Bytes of blobs by where they came from: origin and mirror over the network; volume, found in the store (already there, or committed by a peer on the shared volume).', [
      { labels: { source: 'origin' }, value: state.bytesBySource.origin },
      { labels: { source: 'mirror' }, value: state.bytesBySource.mirror },
      { labels: { source: 'volume' }, value: state.bytesBySource.volume },
    ])
    .family('modelsync_mirror_misses_total', 'counter', 'Blobs a mirror did not have (404, or 403 to a reader without s3:ListBucket).', [{ value: c.mirrorMisses }])
    .family('modelsync_mirror_failures_total', 'counter', 'Mirror reads that failed and fell through to the next source, by error code.', [...state.mirrorFailures].map(([code, n]) => ({ labels: { code }, value: n })))
    .family('modelsync_mirror_writes_total', 'counter', 'Write-backs to mirror_write by outcome (present: HeadObject found it, nothing sent).', [
      { labels: { outcome: 'uploaded' }, value: state.mirrorWrite.uploaded },
      { labels: { outcome: 'present' }, value: state.mirrorWrite.present },
      { labels: { outcome: 'failed' }, value: state.mirrorWrite.failed },
    ])
    .family('modelsync_mirror_write_bytes_total', 'counter', 'Bytes uploaded to mirror_write.', [{ value: state.mirrorWrite.bytes }])
    .family('modelsync_verify_failures_total', 'counter', 'Downloads discarded because their bytes did not match the expected hash or size.', [{ value: c.verifyFailures }])
    .family('modelsync_cache_hits_total', 'counter', 'Entries found present and verified without any network request.', [{ value: c.cacheHits }])
    .family('modelsync_download_retries_total', 'counter', 'Retried requests to origins.', [{ value: c.retries }])
    .family('modelsync_syncs_total', 'counter', 'Completed syncs by outcome.', [
      { labels: { outcome: 'ok' }, value: c.syncsOk },
      { labels: { outcome: 'failed' }, value: c.syncsFailed },
    ])
    .family('modelsync_sync_duration_seconds_total', 'counter', 'Time spent in syncs.', [{ value: c.syncSeconds }])
    .family('modelsync_last_sync_duration_seconds', 'gauge', 'Duration of the last completed sync.', state.lastSync ? [{ value: state.lastSync.durationMs / 1000 }] : [])
    .family('modelsync_last_sync_timestamp_seconds', 'gauge', 'Unix time the last sync finished.', state.lastSync ? [{ value: Date.parse(state.lastSync.finishedAt) / 1000 }] : [])
    .family('modelsync_last_sync_success', 'gauge', '1 when the last sync verified every entry.', state.lastSync ? [{ value: state.lastSync.ok ? 1 : 0 }] : [])
    .family('modelsync_sync_in_progress', 'gauge', '1 while a sync runs.', [{ value: state.syncing ? 1 : 0 }])
    .family('modelsync_manifest_valid', 'gauge', '0 when the manifest file on disk is invalid (the last valid one stays in force).', [{ value: state.manifest?.error === undefined ? 1 : 0 }])
    .family('modelsync_ready', 'gauge', '1 when required models are verified (and ComfyUI answers, with a child).', [{ value: state.ready() ? 1 : 0 }])
    .family('modelsync_healthy', 'gauge', '0 when the child is crash-looping (degraded).', [{ value: state.healthy() ? 1 : 0 }])
    .family('modelsync_cold_start_seconds', 'gauge', 'Seconds from process start to each step of the cold start.', TIMELINE.flatMap((t) => {
      const v = state.timeline[t.key];
      return v === undefined ? [] : [{ labels: { phase: t.phase }, value: v }];
    }));
  const od = state.onDemand?.();
  if (od) {
    x.family('modelsync_on_demand_enabled', 'gauge', '1 when the manifest has an on_demand policy.', [{ value: od.enabled ? 1 : 0 }])
      .family('modelsync_on_demand_bytes', 'gauge', 'Bytes the on-demand layer holds (distinct blobs no manifest entry needs).', [{ value: od.bytesUsed }])
      .family('modelsync_on_demand_max_bytes', 'gauge', 'on_demand.max_bytes of the manifest in force.', od.maxBytes === undefined ? [] : [{ value: od.maxBytes }])
      .family('modelsync_on_demand_entries', 'gauge', 'Dests in the on-demand layer (published or being fetched).', [{ value: od.entries }])
      .family('modelsync_on_demand_pinned_entries', 'gauge', 'Dests pinned by running prompts (never evicted).', [{ value: od.pinned }])
      .family('modelsync_on_demand_evictions_total', 'counter', 'On-demand entries evicted to stay within max_bytes.', [{ value: od.evictions }])
      .family('modelsync_on_demand_jobs_running', 'gauge', 'On-demand jobs not finished yet.', [{ value: od.jobsRunning }])
      .family('modelsync_on_demand_requests_total', 'counter', 'POST /models requests (and the gate\'s) by outcome.', [
        { labels: { outcome: 'accepted' }, value: od.requests.ok },
        { labels: { outcome: 'refused' }, value: od.requests.refused },
      ]);
  }
  if (state.mode === 'entrypoint') {
    x.family('modelsync_comfyui_restarts_total', 'counter', 'Restarts of the supervised child.', [{ value: state.comfy.restarts }])
      .family('modelsync_comfyui_up', 'gauge', '1 while the child answers its health check.', [{ value: state.comfy.phase === 'running' ? 1 : 0 }])
      .family('modelsync_comfyui_degraded', 'gauge', '1 while the child is crash-looping.', [{ value: state.comfy.degraded ? 1 : 0 }]);
  }
  return x.text();
}
