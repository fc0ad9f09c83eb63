import { randomBytes } from 'node:crypto';
import { statfs } from 'node:fs/promises';
import PQueue from 'p-queue';
import { keyName, type ContentKey } from '../content-key.js';
import { ModelsyncError, type ErrorCode } from '../errors.js';
import { fmt } from '../fmt.js';
import type { Entry, Manifest } from '../manifest/types.js';
import { PublishedTable } from '../state/published-table.js';
import { ClaimOwner } from '../store/claim.js';
import type { SyncContext } from '../sync/context.js';
import { presentLocally } from '../sync/local.js';
import { BUSY, runJob } from '../sync/run-job.js';
import { SyncBatch } from '../sync/sync-batch.js';
import type { BlobJob, EntryResult, EntryState, SyncEvents } from '../sync/types.js';
import { JobBook, type JobRecord, type TrackedModel } from './jobs.js';
import { KeyedTurns } from './keyed-turns.js';
import { OnDemandLayer } from './layer.js';
import type { Checked, Normalised } from './normalise.js';
import type { Holder, Job, LayerStatus, ModelEvent, OnDemandService, SubmitOptions } from './service.js';

export interface OnDemandDeps {
  readonly ctx: SyncContext;
  /** The manifest in force (its policy, folders and entries), asked at every request. */
  readonly manifest: () => Manifest;
  /** Aborted when the daemon stops: running jobs fail with E_ABORTED, partials stay resumable. */
  readonly signal: AbortSignal;
  /** The daemon's hooks: bytes, retries and verify failures count in its metrics; a manifest dest's state shows in /status. */
  readonly events?: SyncEvents | undefined;
}

/** One request of a job, with the entry it tracks. */
interface Item {
  readonly n: Normalised;
  readonly model: TrackedModel;
  /** What is fetched and published: the manifest's own entry for one of its dests. */
  readonly entry: Entry;
}

/**
 * The on-demand service (see service.ts) over the daemon's sync context: the same plan, fetch,
 * verify, commit and publish as a manifest sync, beside it (not queued behind it) on the same
 * connection budget. Jobs touching one dest, or one source without a sha256, take turns; one
 * blob wanted by two jobs at once is fetched once (SyncContext.inflight).
 */
export class OnDemand implements OnDemandService {
  readonly layer: OnDemandLayer;
  private readonly jobs: JobBook;
  private readonly listeners = new Set<(e: ModelEvent) => void>();
  private readonly turns = new KeyedTurns();
  private readonly files: PQueue;
  private readonly running = new Set<Promise<void>>();
  private requests = { ok: 0, refused: 0 };

  constructor(private readonly deps: OnDemandDeps) {
    const { ctx } = deps;
    this.jobs = new JobBook(ctx.clock, (e) => this.emit(e));
    this.layer = new OnDemandLayer(ctx, deps.manifest, (model) => this.emit({ type: 'evicted', job: undefined, model }));
    this.files = new PQueue({ concurrency: ctx.connections.files });
    // Reservations of a process that died: nothing fetches them now.
    const stale = this.layer.table.rows().filter((r) => r.state === 'fetching');
    if (stale.length > 0) void this.layer.exclusive(() => this.layer.cancel(stale.map((r) => r.dest)));
  }

  async submit(requests: readonly unknown[], opts: SubmitOptions = {}): Promise<Job> {
    // zod and the resolver load with the first request: a daemon that never gets one starts without them.
    const { checkRequests, settleRequests } = await import('./normalise.js');
    let normalised: Normalised[];
    try {
      const manifest = this.deps.manifest();
      const checked = checkRequests(requests, { manifest, hfEndpoint: this.deps.ctx.config.hf.endpoint });
      normalised = settleRequests(checked, await this.place(checked, manifest), manifest);
    } catch (e) {
      this.requests.refused++;
      throw e;
    }
    this.requests.ok++;
    if (this.deps.signal.aborted) throw new ModelsyncError('E_ABORTED', 'the daemon is stopping');
    // Pinned before anything else happens: an admission running meanwhile must not evict them.
    if (opts.holder) for (const n of normalised) this.layer.pin(n.entry.dest, opts.holder.id);
    const manifest = this.deps.manifest();
    const job = this.jobs.create(normalised.map((n) => ({ dest: n.entry.dest, source: n.uri })));
    const items = normalised.map((n, i): Item => {
      const own = n.manifestDest ? manifest.entries.find((m) => m.dest === n.entry.dest) : undefined;
      return { n, model: job.models[i] as TrackedModel, entry: own ?? n.entry };
    });
    const todo = await this.inPlace(job, items);
    for (const it of todo) job.announce(it.model);
    job.settleIfDone();
    if (todo.length > 0) this.track(this.run(job, todo));
    return job;
  }

  /**
   * Civitai requests without a dest: placed as the manifest places its own (the model type's
   * folder and the file's name, the manifest's dest rules), from the state DB or one API call.
   * A failure refuses the request, tagged with its index.
   */
  private async place(checked: readonly Checked[], manifest: Manifest): Promise<Map<number, Entry>> {
    const unplaced = checked.flatMap((c) => (c.unplaced ? [c.unplaced] : []));
    if (unplaced.length === 0) return new Map();
    const { placeForSync } = await import('../sync/place.js');
    const p = await placeForSync(this.deps.ctx, { ...manifest, entries: [], unplaced }, this.deps.signal);
    const failed = p.failed[0];
    if (failed) throw failed.error;
    const stillUnknown = p.manifest.unplaced[0];
    if (stillUnknown) throw new ModelsyncError('E_MANIFEST', `models[${stillUnknown.index}]: dest: none given, and none derived from Civitai`, { entry: stillUnknown.index });
    return new Map(p.manifest.entries.map((e) => [e.index, e]));
  }

  job(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  subscribe(listener: (e: ModelEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  holder(label: string): Holder {
    const id = `${label.slice(0, 64)}#${randomBytes(4).toString('hex')}`;
    let held = true;
    return {
      id,
      release: () => {
        if (!held) return;
        held = false;
        this.layer.unpin(id);
      },
    };
  }

  status(): LayerStatus {
    const policy = this.deps.manifest().onDemand;
    const use = this.layer.usage();
    return { enabled: policy !== undefined, maxBytes: policy?.maxBytes, bytesUsed: use.bytes, entries: use.entries, pinned: this.layer.pinnedCount(), evictions: this.layer.evictions, jobsRunning: this.jobs.running };
  }

  /** Requests accepted and refused (validation and policy) since start, for /metrics. */
  get requestCounts(): { readonly ok: number; readonly refused: number } {
    return this.requests;
  }

  /** Resolves once every running job has ended (after the daemon's signal, they end quickly). */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }

  private track(p: Promise<void>): void {
    const t = p.catch((e: unknown) => this.deps.ctx.log.error({ err: e instanceof Error ? e.stack : String(e) }, 'on-demand job failed unexpectedly (a bug)'));
    this.running.add(t);
    void t.finally(() => this.running.delete(t));
  }

  private emit(e: ModelEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.deps.ctx.log.error({ err: err instanceof Error ? err.stack : String(err) }, 'on-demand event listener failed (a bug)');
      }
    }
  }

  /** Entries already in place are ready now; the rest are returned, still queued. */
  private async inPlace(job: JobRecord, items: readonly Item[]): Promise<Item[]> {
    const todo: Item[] = [];
    for (const it of items) {
      if (it.entry !== it.n.entry) {
        const p = await presentLocally(this.deps.ctx, it.entry, this.deps.manifest().path);
        if (p) job.set(it.model, 'ready', { total: p.size });
        else todo.push(it);
        continue;
      }
      const found = await this.layer.find(it.n);
      if (found === 'absent') {
        todo.push(it);
        continue;
      }
      if (found === 'user') {
        it.model.unmanaged = true;
        this.deps.ctx.log.info({ dest: it.n.entry.dest }, 'on-demand request: a file modelsync did not place is at its dest; left alone');
      }
      job.set(it.model, 'ready', { total: this.layer.table.row(it.n.entry.dest)?.size });
    }
    return todo;
  }

  private async run(job: JobRecord, queued: readonly Item[]): Promise<void> {
    const names = queued.flatMap((it) => [`dest:${it.entry.dest}`, ...(it.n.tofu ? [`source:${it.n.uri}`] : [])]);
    await this.turns.run(names, async () => {
      // An earlier job on the same dests may have placed them meanwhile.
      const todo = await this.inPlace(job, queued);
      if (todo.length > 0) await this.fetch(job, todo);
    });
  }

  private async fetch(job: JobRecord, todo: readonly Item[]): Promise<void> {
    const { ctx, signal } = this.deps;
    const manifest = this.deps.manifest();
    const byEntry = new Map(todo.map((it) => [it.entry, it]));
    const fail = (it: Item | undefined, e: { code: string; message: string }): void => {
      if (it) job.set(it.model, 'failed', { error: { code: e.code as ErrorCode, message: e.message } });
    };
    const events = this.eventsFor(job, byEntry);
    const entries = todo.map((it) => it.entry);
    const tofu = new Set(todo.filter((it) => it.n.tofu && it.entry === it.n.entry).map((it) => it.entry));
    const { resolveForLayer } = await import('./resolve.js');
    const r = await resolveForLayer(ctx, manifest, entries, tofu, this.layer, signal, events).catch((e: unknown) => {
      const me = e instanceof ModelsyncError ? e : new ModelsyncError('E_SYNC_FAILED', String(e), { cause: e });
      for (const it of todo) fail(it, me.forEntry(it.entry.index, it.entry.dest));
      return undefined;
    });
    if (!r) return;
    for (const f of r.failed) fail(byEntry.get(f.entry), f.error);
    for (const e of r.present) {
      const it = byEntry.get(e);
      if (it) job.set(it.model, 'ready');
    }
    const admitted = await this.admit(r.jobs, byEntry, fail);
    if (admitted.length === 0) return;
    const space = await this.spaceProblem(admitted.filter((j) => !r.inStore.has(keyName(j.key))));
    if (space) {
      await this.layer.exclusive(() => this.layer.cancel(admitted.flatMap((j) => j.entries.map((e) => e.dest))));
      for (const j of admitted) for (const e of j.entries) fail(byEntry.get(e), space.forEntry(e.index, e.dest));
      return;
    }
    const claims = new ClaimOwner(ctx.store.at.tmp, ctx.token);
    try {
      await Promise.all(admitted.map((j) => this.files.add(() => this.fetchOne(job, manifest, j, byEntry, claims, events, fail))));
    } finally {
      await claims.dispose();
    }
  }

  /** The layer's reservations; refused blobs fail their entries. Jobs for a manifest's own dests need none. */
  private async admit(jobs: readonly BlobJob[], byEntry: ReadonlyMap<Entry, Item>, fail: (it: Item | undefined, e: ModelsyncError) => void): Promise<BlobJob[]> {
    const layerItems = jobs.flatMap((j) => j.entries.filter((e) => byEntry.get(e)?.n.entry === e).map((e) => ({ job: j, entry: e, uri: byEntry.get(e)?.n.uri ?? e.source.uri })));
    const verdicts = await this.layer.exclusive(() => this.layer.admit(layerItems.map((i) => ({ dest: i.entry.dest, uri: i.uri, key: i.job.key, size: i.job.file.size ?? 0 }))));
    const refused = new Set<Entry>();
    layerItems.forEach((i, n) => {
      const v = verdicts[n];
      if (!v) return;
      refused.add(i.entry);
      fail(byEntry.get(i.entry), v.forEntry(i.entry.index, i.entry.dest));
    });
    return jobs.flatMap((j) => {
      const entries = j.entries.filter((e) => !refused.has(e));
      return entries.length === 0 ? [] : [{ ...j, entries }];
    });
  }

  private async spaceProblem(downloads: readonly BlobJob[]): Promise<ModelsyncError | undefined> {
    const need = downloads.reduce((a, j) => a + (j.file.size ?? 0), 0);
    if (need === 0) return undefined;
    const fs = await statfs(this.deps.ctx.store.root);
    const free = fs.bavail * fs.bsize;
    return need > free ? new ModelsyncError('E_NO_SPACE', `not enough free space: need ${fmt(need)}, have ${fmt(free)} free`) : undefined;
  }

  private async fetchOne(job: JobRecord, manifest: Manifest, j: BlobJob, byEntry: ReadonlyMap<Entry, Item>, claims: ClaimOwner, events: SyncEvents, fail: (it: Item | undefined, e: { code: string; message: string }) => void): Promise<void> {
    const { ctx, signal } = this.deps;
    const batch = new SyncBatch(ctx.db, ctx.log, ctx.clock);
    const results = new Map<Entry, EntryResult>();
    const record = (e: Entry, key: ContentKey, size: number): void => {
      const it = byEntry.get(e);
      if (!it || it.entry !== it.n.entry) {
        new PublishedTable(ctx.db, ctx.config.modelsDir).put(manifest.path, e.dest, e.source.uri, key, size);
        return;
      }
      const before = this.layer.table.row(e.dest);
      const at = this.layer.stamp();
      this.layer.table.put({ dest: e.dest, source: it.n.uri, key, size, state: 'ready', lastUsed: at, createdAt: before?.createdAt ?? at });
    };
    const scope = { batch, claims, record, settle: (e: Entry, res: EntryResult) => results.set(e, res) };
    try {
      let got = await runJob(ctx, manifest, j, { ...scope, firstPass: true }, signal, events);
      if (got === BUSY) got = await runJob(ctx, manifest, j, { ...scope, firstPass: false }, signal, events);
    } finally {
      await batch.finish();
    }
    const ok = (e: Entry): boolean => results.get(e)?.state === 'published' || results.get(e)?.state === 'present';
    // The books first (reservations that came to nothing, the learnt key in the reference
    // record), then the answer: a caller told 'ready' finds the record saying so too.
    const failed = j.entries.filter((e) => !ok(e)).map((e) => e.dest);
    await this.layer.exclusive(async () => {
      if (failed.length > 0) await this.layer.cancel(failed);
      if (j.learn) await this.layer.settled([j.key]);
    });
    for (const e of j.entries) {
      const it = byEntry.get(e);
      const res = results.get(e);
      if (!it) continue;
      if (ok(e)) job.set(it.model, 'ready', { total: res?.size });
      else fail(it, res?.error ?? { code: 'E_ABORTED', message: 'not fetched' });
    }
  }

  /** The engine's hooks for one job: its entries' states and bytes, and the daemon's counters. */
  private eventsFor(job: JobRecord, byEntry: ReadonlyMap<Entry, Item>): SyncEvents {
    const daemon = this.deps.events;
    const byKey = new Map<string, Item[]>();
    const STATE: Partial<Record<EntryState, 'queued' | 'downloading' | 'verifying'>> = { queued: 'queued', resolving: 'queued', 'waiting-peer': 'queued', downloading: 'downloading', verifying: 'verifying' };
    return {
      entryState: (e, state, detail) => {
        if (byEntry.get(e)?.entry !== byEntry.get(e)?.n.entry) daemon?.entryState?.(e, state, detail);
        const it = byEntry.get(e);
        const to = STATE[state];
        if (!it || to === undefined) return;
        if (detail?.key) {
          const k = keyName(detail.key);
          const list = byKey.get(k) ?? [];
          if (!list.includes(it)) list.push(it);
          byKey.set(k, list);
        }
        job.set(it.model, to, { total: detail?.size });
      },
      bytes: (n, key) => {
        daemon?.bytes?.(n, key);
        for (const it of byKey.get(keyName(key)) ?? []) job.progress(it.model, n);
      },
      retry: (uri, reason, waitMs) => daemon?.retry?.(uri, reason, waitMs),
      verifyFailure: (uri) => daemon?.verifyFailure?.(uri),
      sourced: (b) => daemon?.sourced?.(b),
      mirrorMiss: (m) => daemon?.mirrorMiss?.(m),
      mirrorFailure: (m, code) => daemon?.mirrorFailure?.(m, code),
      mirrorWrite: (outcome, bytes) => daemon?.mirrorWrite?.(outcome, bytes),
    };
  }
}
