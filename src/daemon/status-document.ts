import { notReadySentence } from './readiness.js';
import type { DaemonState } from './state.js';

/** The /status document (docs/daemon.md): what `state` holds, as the control API shows it. */
export function statusDocument(state: DaemonState): Record<string, unknown> {
  const entries = [...state.entries.values()].sort((a, b) => a.index - b.index);
  const byState: Record<string, number> = {};
  for (const e of entries) byState[e.state] = (byState[e.state] ?? 0) + 1;
  const gate = state.gate;
  return {
    mode: state.mode,
    ready: state.ready(),
    readiness: state.ready() ? 'ready' : notReadySentence(state, true),
    healthy: state.healthy(),
    requiredReady: state.requiredReady(),
    manifest: state.manifest,
    comfyui: state.mode === 'service' ? undefined : { ...state.comfy, modelsGone: state.gone },
    gate: gate === undefined ? undefined : { ...gate, prompts: gate.prompts === undefined ? undefined : { ...gate.prompts } },
    sync: { running: state.syncing, last: state.lastSync, bytesDownloaded: state.counters.bytesDownloaded, bytesBySource: { ...state.bytesBySource }, throughputBytesPerSecond: state.throughput() },
    mirrors: { misses: state.counters.mirrorMisses, failures: Object.fromEntries(state.mirrorFailures), write: { ...state.mirrorWrite } },
    timeline: state.timeline,
    counts: byState,
    onDemand: state.onDemand?.(),
    entries: entries.map((e) => ({
      index: e.index,
      dest: e.dest,
      source: e.source,
      required: e.required,
      state: e.state,
      verified: e.verified,
      size: e.size,
      bytes: e.bytes,
      progress: e.verified ? 1 : e.size ? Math.min(1, e.bytes / e.size) : 0,
      hash: e.key,
      error: e.error,
    })),
  };
}
