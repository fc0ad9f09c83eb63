import PQueue from 'p-queue';
import { ModelsyncError } from '../errors.js';
import { whyNotWritable } from '../os-errors.js';
import type { Entry, Manifest } from '../manifest/types.js';
import { keyName } from '../content-key.js';
import { ClaimOwner, SMALL_BLOB_BYTES } from '../store/claim.js';
import { PublishedTable } from '../state/published-table.js';
import { sweepDeadClaims } from '../store/sweep-dead-claims.js';
import type { SyncContext } from './context.js';
import { placeForSync, unplacedLabel, type Filter } from './place.js';
import { buildPlan, checkSpace } from './plan.js';
import { settleRemoved } from './removed.js';
import { writeRefs } from './refs.js';
import { BUSY, result, runJob } from './run-job.js';
import { SyncBatch } from './sync-batch.js';
import { NO_BYTES, addBytes, type BlobJob, type EntryResult, type SyncEvents, type SyncReport } from './types.js';

export interface SyncOptions {
  readonly signal?: AbortSignal;
  readonly events?: SyncEvents;
  /** Only these entries (e.g. the required ones first); all when absent. */
  readonly filter?: Filter;
}

/**
 * Bring the models dir in line with the manifest: plan, refuse what cannot fit, fetch each
 * distinct blob once (bounded parallelism), verify, commit, publish to every dest, remember.
 * Per-entry failures are reported, not thrown; a plan that does not fit is thrown.
 */
export async function runSync(ctx: SyncContext, written: Manifest, opts: SyncOptions = {}): Promise<SyncReport> {
  const started = ctx.clock.now();
  const signal = opts.signal ?? new AbortController().signal;
  const given = opts.events ?? {};
  // Every byte that came in counts, a failed or discarded download's too: a sync that failed
  // after 286 MB says so rather than "fetched 0 B".
  let fetched = 0;
  const events: SyncEvents = {
    ...given,
    bytes: (n, key) => {
      fetched += n;
      given.bytes?.(n, key);
    },
  };
  const filter = opts.filter ?? (() => true);
  // Civitai entries written without dest get theirs first: the rest of the sync is the same for all.
  const placement = await placeForSync(ctx, written, signal, filter);
  const manifest = placement.manifest;
  for (const e of manifest.entries) if (e.derived && filter(e)) events.placed?.(e);
  for (const f of placement.failed) events.entryState?.({ ...f.entry, dest: unplacedLabel(f.entry) }, 'failed', { error: f.error.message });
  const entries = manifest.entries.filter(filter);
  const plan = await buildPlan(ctx, manifest, entries, signal, events);
  checkSpace(plan);
  // Before the first byte: a download that could never be published is hours for nothing.
  if (plan.jobs.length > 0) {
    const why = whyNotWritable(ctx.config.modelsDir);
    if (why !== undefined) throw new ModelsyncError('E_NOT_WRITABLE', `models dir ${ctx.config.modelsDir} is not writable: ${why}`);
  }
  // Tell gc on other nodes what we are about to fetch and publish before we do it (see refs.ts).
  if (plan.jobs.length > 0) {
    const planned = [...plan.present, ...plan.jobs].map((p) => keyName(p.key));
    await writeRefs(ctx, manifest.path, planned, { merge: true }).catch((e: unknown) => ctx.log.warn({ err: String(e) }, 'could not record references for gc'));
  }
  const results = new Map<Entry, EntryResult>();
  for (const p of plan.present) results.set(p.entry, result(p.entry, 'present', { key: p.key, size: p.size }));
  for (const f of plan.failed) {
    results.set(f.entry, result(f.entry, 'failed', { error: f.error }));
    events.entryState?.(f.entry, 'failed', { error: f.error.message });
  }
  let bySource = NO_BYTES;
  // Folder fsyncs and state DB rows of every commit and publish, done in a few passes; the last
  // one before this sync reports anything (see SyncBatch for why that is as durable as before).
  const batch = new SyncBatch(ctx.db, ctx.log, ctx.clock);
  // An entry found in place under another manifest's row (or one an older modelsync carried
  // over): this manifest's own row, so that dropping it later is this manifest's to judge.
  const published = new PublishedTable(ctx.db, ctx.config.modelsDir);
  for (const p of plan.present) {
    if (!published.has(p.entry.dest, manifest.path)) batch.record(() => published.put(manifest.path, p.entry.dest, p.entry.source.uri, p.key, p.size));
  }
  const files = new PQueue({ concurrency: ctx.connections.files });
  const claims = new ClaimOwner(ctx.store.at.tmp, ctx.token);
  // Small blobs a peer is fetching right now: a second pass, after everything else.
  const busy: BlobJob[] = [];
  const pass = (jobs: readonly BlobJob[], first: boolean): Promise<unknown> =>
    Promise.all(
      jobs.map((job) =>
        files.add(async () => {
          const got = await runJob(ctx, manifest, job, { batch, claims, firstPass: first, settle: (e, r) => results.set(e, r) }, signal, events);
          if (got === BUSY) busy.push(job);
          else bySource = addBytes(bySource, got.bySource);
        }),
      ),
    );
  try {
    await pass(plan.jobs, true);
    await pass(busy, false);
  } finally {
    await claims.dispose();
    await batch.finish();
  }
  // After every publish (a dest that moved is at its new place before the old one goes); only in a
  // sync of the whole manifest, never one cut short.
  const removed = opts.filter || signal.aborted ? [] : await settleRemoved(ctx, manifest, { unplacedSources: new Set(placement.failed.map((f) => f.entry.source.uri)) });
  await sweepDeadClaims(ctx.store, SMALL_BLOB_BYTES).catch((e: unknown) => ctx.log.warn({ err: String(e) }, 'could not clear what dead syncs left in the store'));
  // A filtered warm pass (run's required phase) references nothing new: no shared-volume write
  // before ComfyUI starts; the full pass that follows records everything.
  if (!opts.filter || plan.jobs.length > 0) {
    const keys = [...results.values()].flatMap((r) => (r.key ? [keyName(r.key)] : []));
    const complete = !opts.filter && placement.failed.length === 0 && results.size === entries.length && [...results.values()].every((r) => r.state !== 'failed');
    await writeRefs(ctx, manifest.path, keys, { merge: !complete }).catch((e: unknown) => ctx.log.warn({ err: String(e) }, 'could not record references for gc'));
  }
  const unplaced = placement.failed.map((f) => result({ ...f.entry, dest: unplacedLabel(f.entry) }, 'failed', { error: f.error }));
  const list = [...entries.map((e) => results.get(e) ?? result(e, 'failed', { error: new ModelsyncError('E_ABORTED', 'not synced') })), ...unplaced].sort((a, b) => a.index - b.index);
  return {
    ok: list.every((r) => r.state !== 'failed'),
    entries: list,
    removed,
    bytesFetched: fetched,
    bytesBySource: bySource,
    durationMs: ctx.clock.now() - started,
  };
}
