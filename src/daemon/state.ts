import type { Entry, Manifest } from '../manifest/types.js';
import { keyName } from '../content-key.js';
import { unplacedLabel } from '../sync/place.js';
import type { EntryState, SyncEvents, SyncReport } from '../sync/types.js';
import type { GateStats } from '../gate/gate.js';
import type { LayerStatus } from '../ondemand/service.js';
import type { ChildExit } from './backoff.js';

/** What /status and /metrics show of the on-demand layer. */
export type OnDemandReport = LayerStatus & { readonly requests: { readonly ok: number; readonly refused: number } };

/** ComfyUI's state in /status (`comfyui.phase`); docs/daemon.md lists them. */
export type ComfyPhase = 'none' | 'waiting-for-models' | 'starting' | 'running' | 'unresponsive' | 'backoff' | 'stopping' | 'exited';

/**
 * An entry's state in /status, /metrics and `modelsync status`: one vocabulary (docs/daemon.md).
 * The sync engine's `published` (what a sync did) is `present` here (what the models dir holds).
 */
export type StatusState = Exclude<EntryState, 'published'>;

function statusState(s: EntryState): StatusState {
  return s === 'published' ? 'present' : s;
}

export interface EntryStatus {
  readonly index: number;
  readonly dest: string;
  readonly source: string;
  readonly required: boolean;
  state: StatusState;
  /** Last sync ended with this entry present and verified (sticky through a re-check). */
  verified: boolean;
  size: number | undefined;
  /** Bytes fetched for it in the current or last sync. */
  bytes: number;
  key: string | undefined;
  error: string | undefined;
}

export interface LastSync {
  readonly reason: string;
  readonly ok: boolean;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationMs: number;
  readonly bytesFetched: number;
  readonly failed: readonly string[];
  /** Dests the manifest no longer names, and what the sync did with each (sync/removed.ts). */
  readonly removed: readonly { readonly dest: string; readonly state: string; readonly reason?: string | undefined }[];
  readonly error: string | undefined;
}

/** Seconds since this process started, at each step of a cold start. */
export interface Timeline {
  manifestLoaded?: number;
  requiredReady?: number;
  comfySpawned?: number;
  comfyAnswering?: number;
}

const THROUGHPUT_WINDOW_MS = 10_000;

/**
 * What /status, /readyz, /healthz and /metrics report: fed by the sync engine's events and the
 * supervisor's, read-only for everyone else. Shown by status-document.ts (/status), metrics.ts
 * and readiness.ts.
 */
export class DaemonState {
  readonly entries = new Map<string, EntryStatus>();
  readonly counters = { bytesDownloaded: 0, verifyFailures: 0, cacheHits: 0, retries: 0, syncsOk: 0, syncsFailed: 0, syncSeconds: 0, mirrorMisses: 0 };
  /** Bytes of blobs by where they came from (see BytesBySource), over every sync and on-demand job. */
  readonly bytesBySource = { origin: 0, mirror: 0, volume: 0 };
  /** Mirror reads that fell through to the next source, by error code. */
  readonly mirrorFailures = new Map<string, number>();
  /** Write-backs to mirror_write by outcome, and the bytes uploaded. */
  readonly mirrorWrite = { uploaded: 0, present: 0, failed: 0, bytes: 0 };
  readonly timeline: Timeline = {};
  readonly comfy: {
    phase: ComfyPhase;
    pid: number | undefined;
    url: string | undefined;
    restarts: number;
    degraded: boolean;
    /** --max-restarts starts in a row never became healthy: no more restarts. */
    gaveUp: boolean;
    lastExit: (ChildExit & { at: string }) | undefined;
    /** When the next start is due, during a backoff (wall clock, ISO 8601). */
    nextStartAt: string | undefined;
    reason: string | undefined;
  } = {
    phase: 'none',
    pid: undefined,
    url: undefined,
    restarts: 0,
    degraded: false,
    gaveUp: false,
    lastExit: undefined,
    nextStartAt: undefined,
    reason: undefined,
  };
  /** Required models ComfyUI was started with, or has had since: readiness needs them on disk. */
  private readonly served = new Set<string>();
  /** Those of them found missing by the last check (checkServed). */
  gone: readonly string[] = [];
  manifest: { path: string; loadedAt: string; error: string | undefined } | undefined;
  syncing: { reason: string; startedAt: string } | undefined;
  lastSync: LastSync | undefined;
  /** `run --gate`: the gate's counters, live. */
  gate: GateStats | undefined;
  /** The on-demand layer, once the daemon serves it (/status `onDemand`, the modelsync_on_demand_* metrics). */
  onDemand: (() => OnDemandReport) | undefined;
  private readonly samples: { at: number; bytes: number }[] = [];
  private readonly dests = new Map<string, Set<string>>();

  constructor(
    readonly mode: 'entrypoint' | 'service',
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A new manifest: entries whose dest and source are unchanged keep what we know of them. */
  setManifest(m: Manifest): void {
    const old = new Map(this.entries);
    this.entries.clear();
    for (const e of m.entries) {
      const prev = old.get(e.dest);
      if (prev && prev.source === e.source.uri && prev.required === e.required) {
        this.entries.set(e.dest, { ...prev, index: e.index });
        continue;
      }
      this.entries.set(e.dest, { index: e.index, dest: e.dest, source: e.source.uri, required: e.required, state: 'pending', verified: false, size: e.size, bytes: 0, key: undefined, error: undefined });
    }
    // A civitai entry written without dest counts (a required one holds readiness back) under
    // its source until a sync derives its dest (events.placed).
    for (const e of m.unplaced) {
      const label = unplacedLabel(e);
      this.entries.set(label, { index: e.index, dest: label, source: e.source.uri, required: e.required, state: 'pending', verified: false, size: e.size, bytes: 0, key: undefined, error: undefined });
    }
    this.manifest = { path: m.path, loadedAt: new Date().toISOString(), error: undefined };
  }

  mark(step: keyof Timeline): void {
    this.timeline[step] ??= this.now() / 1000;
  }

  /** Every required entry is verified (for the manifest in force). */
  requiredReady(): boolean {
    for (const e of this.entries.values()) if (e.required && !e.verified) return false;
    return this.manifest !== undefined;
  }

  /**
   * Service mode: every required entry is verified. Entrypoint mode: ComfyUI answers and no
   * required model it was started with (or has had since) is gone from disk. Entries a manifest
   * edit adds are fetched without taking readiness away: every node sees the edit at once, and a
   * Service that lost all its pods together for a new model would be an outage.
   */
  ready(): boolean {
    if (this.mode === 'service') return this.requiredReady();
    return this.comfy.phase === 'running' && this.gone.length === 0;
  }

  /** Look for the models ComfyUI has been serving; `exists` asks the disk about one dest. */
  async checkServed(exists: (dest: string) => Promise<boolean>): Promise<void> {
    const wanted = [...this.served].filter((d) => this.entries.get(d)?.required === true);
    const found = await Promise.all(wanted.map(exists));
    this.gone = wanted.filter((_, i) => !found[i]).sort();
  }

  private serve(s: EntryStatus): void {
    if (s.required && s.verified && this.timeline.comfySpawned !== undefined) this.served.add(s.dest);
  }

  /** Alive and not crash-looping. */
  healthy(): boolean {
    return !this.comfy.degraded;
  }

  throughput(): number {
    const now = this.now();
    while (this.samples.length > 0 && (this.samples[0]?.at ?? now) < now - THROUGHPUT_WINDOW_MS) this.samples.shift();
    const total = this.samples.reduce((a, s) => a + s.bytes, 0);
    return total / (THROUGHPUT_WINDOW_MS / 1000);
  }

  syncStarted(reason: string): void {
    this.syncing = { reason, startedAt: new Date().toISOString() };
  }

  syncFinished(reason: string, report: SyncReport | undefined, error: string | undefined): void {
    const startedAt = this.syncing?.startedAt ?? new Date().toISOString();
    this.syncing = undefined;
    const ok = report?.ok === true && error === undefined;
    if (ok) this.counters.syncsOk++;
    else this.counters.syncsFailed++;
    const durationMs = report?.durationMs ?? Date.now() - Date.parse(startedAt);
    this.counters.syncSeconds += durationMs / 1000;
    this.lastSync = {
      reason,
      ok,
      startedAt,
      finishedAt: new Date().toISOString(),
      durationMs,
      bytesFetched: report?.bytesFetched ?? 0,
      failed: report?.entries.filter((r) => r.state === 'failed').map((r) => r.dest) ?? [],
      removed: (report?.removed ?? []).map((r) => ({ dest: r.dest, state: r.state, reason: r.reason })),
      error,
    };
    for (const r of report?.entries ?? []) {
      const s = this.entries.get(r.dest);
      if (!s || s.source !== r.source) continue;
      s.verified = r.state !== 'failed';
      s.state = statusState(r.state);
      this.serve(s);
      if (r.size !== undefined) s.size = r.size;
      if (r.key) s.key = keyName(r.key);
      s.error = r.error?.message;
    }
  }

  /** The sync engine's hooks, writing into this state. */
  readonly events: SyncEvents = {
    placed: (entry: Entry) => {
      const label = unplacedLabel(entry);
      const was = this.entries.get(label);
      if (was === undefined || was.index !== entry.index) return;
      this.entries.delete(label);
      if (!this.entries.has(entry.dest)) this.entries.set(entry.dest, { ...was, dest: entry.dest });
    },
    entryState: (entry: Entry, state: EntryState, detail) => {
      const s = this.entryFor(entry);
      if (!s) return;
      if (state === 'resolving' || (state === 'downloading' && s.state !== 'downloading')) s.bytes = 0;
      s.state = statusState(state);
      if (detail?.size !== undefined) s.size = detail.size;
      if (detail?.key) {
        s.key = keyName(detail.key);
        const set = this.dests.get(s.key) ?? new Set<string>();
        set.add(s.dest);
        this.dests.set(s.key, set);
      }
      if (state === 'present' || state === 'published') {
        s.verified = true;
        s.error = undefined;
        if (s.size !== undefined) s.bytes = Math.max(s.bytes, s.size);
        this.serve(s);
      }
      if (state === 'failed') {
        s.verified = false;
        s.error = detail?.error;
      }
    },
    bytes: (n, key) => {
      this.counters.bytesDownloaded += n;
      this.samples.push({ at: this.now(), bytes: n });
      for (const d of this.dests.get(keyName(key)) ?? []) {
        const s = this.entries.get(d);
        if (s) s.bytes += n;
      }
    },
    retry: () => {
      this.counters.retries++;
    },
    cacheHit: () => {
      this.counters.cacheHits++;
    },
    verifyFailure: () => {
      this.counters.verifyFailures++;
    },
    sourced: (b) => {
      this.bytesBySource.origin += b.origin;
      this.bytesBySource.mirror += b.mirror;
      this.bytesBySource.volume += b.volume;
    },
    mirrorMiss: () => {
      this.counters.mirrorMisses++;
    },
    mirrorFailure: (_mirror, code) => {
      this.mirrorFailures.set(code, (this.mirrorFailures.get(code) ?? 0) + 1);
    },
    mirrorWrite: (outcome, bytes) => {
      this.mirrorWrite[outcome]++;
      this.mirrorWrite.bytes += bytes;
    },
  };

  childSpawned(pid: number): void {
    this.comfy.phase = 'starting';
    this.comfy.pid = pid;
    this.comfy.nextStartAt = undefined;
    this.mark('comfySpawned');
    for (const e of this.entries.values()) this.serve(e);
  }

  childBackoff(delayMs: number): void {
    this.comfy.phase = 'backoff';
    this.comfy.restarts++;
    this.comfy.nextStartAt = new Date(Date.now() + delayMs).toISOString();
  }

  childAnswering(): void {
    this.comfy.phase = 'running';
    this.comfy.reason = undefined;
    this.mark('comfyAnswering');
  }

  childExited(exit: ChildExit): void {
    this.comfy.phase = 'exited';
    this.comfy.pid = undefined;
    this.comfy.lastExit = { ...exit, at: new Date().toISOString() };
  }

  private entryFor(entry: Entry): EntryStatus | undefined {
    const s = this.entries.get(entry.dest);
    return s && s.source === entry.source.uri ? s : undefined;
  }
}
