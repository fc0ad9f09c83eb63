import path from 'node:path';
import PQueue from 'p-queue';
import { ModelsyncError } from '../errors.js';
import { machineError, syscallText, whyNotWritable } from '../os-errors.js';
import type { Entry, Manifest } from '../manifest/types.js';
import { keyName } from '../content-key.js';
import type { FileStamp } from '../state/db.js';
import { sameContentStamp, stampOf } from '../store/blobs.js';
import { ClaimOwner, SMALL_BLOB_BYTES } from '../store/claim.js';
import { blobPath } from '../store/layout.js';
import { publish, type PublishMode } from '../store/publish.js';
import { sweepDeadClaims } from '../store/sweep-dead-claims.js';
import type { SyncContext } from './context.js';
import { buildPlan, checkSpace } from './plan.js';
import { writeRefs } from './refs.js';
import { SyncBatch } from './sync-batch.js';
import type { BlobJob, EntryResult, SyncEvents, SyncReport } from './types.js';

export interface SyncOptions {
  readonly signal?: AbortSignal;
  readonly events?: SyncEvents;
  /** Only these entries (e.g. the required ones first); all when absent. */
  readonly filter?: (e: Entry) => boolean;
}

/**
 * Bring the models dir in line with the manifest: plan, refuse what cannot fit, fetch each
 * distinct blob once (bounded parallelism), verify, commit, publish to every dest, remember.
 * Per-entry failures are reported, not thrown; a plan that does not fit is thrown.
 */
export async function runSync(ctx: SyncContext, manifest: Manifest, opts: SyncOptions = {}): Promise<SyncReport> {
  const started = ctx.clock.now();
  const signal = opts.signal ?? new AbortController().signal;
  const events = opts.events ?? {};
  const entries = manifest.entries.filter(opts.filter ?? (() => true));
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
  let fetched = 0;
  // Folder fsyncs and state DB rows of every commit and publish, done in a few passes; the last
  // one before this sync reports anything (see SyncBatch for why that is as durable as before).
  const batch = new SyncBatch(ctx.db, ctx.log, ctx.clock);
  const files = new PQueue({ concurrency: ctx.connections.files });
  const claims = new ClaimOwner(ctx.store.tmp, ctx.token);
  // Small blobs a peer is fetching right now: a second pass, after everything else.
  const busy: BlobJob[] = [];
  const pass = (jobs: readonly BlobJob[], first: boolean): Promise<unknown> =>
    Promise.all(
      jobs.map((job) =>
        files.add(async () => {
          job.entries.forEach((e) => events.entryState?.(e, 'queued'));
          try {
            const source = await ctx.sourceFor(job.entries[0]?.source.kind ?? 'hf', manifest);
            // Loaded on first use: a warm start (nothing to fetch) skips the whole transfer stack.
            const { fetchBlob, BUSY } = await import('./fetch-blob.js');
            const got = await fetchBlob(ctx, job, source, signal, events, { batch, claims, firstPass: first });
            if (got === BUSY) {
              job.entries.forEach((e) => events.entryState?.(e, 'waiting-peer'));
              busy.push(job);
              return;
            }
            fetched += got.fetched;
            await publishJob(ctx, job, got.stamp, results, events, batch);
          } catch (err) {
            const known = machineError(err, syscallText(err));
            const me = known ?? new ModelsyncError('E_SYNC_FAILED', String(err), { cause: err });
            if (!known) ctx.log.error({ err }, 'unexpected error');
            for (const e of job.entries) {
              const ee = me.forEntry(e.index, e.dest);
              results.set(e, result(e, 'failed', { error: ee }));
              events.entryState?.(e, 'failed', { error: ee.message });
            }
          }
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
  await sweepDeadClaims(ctx.store, SMALL_BLOB_BYTES).catch((e: unknown) => ctx.log.warn({ err: String(e) }, 'could not clear what dead syncs left in the store'));
  // A filtered warm pass (run's required phase) references nothing new: no shared-volume write
  // before ComfyUI starts; the full pass that follows records everything.
  if (!opts.filter || plan.jobs.length > 0) {
    const keys = [...results.values()].flatMap((r) => (r.key ? [keyName(r.key)] : []));
    const complete = !opts.filter && results.size === entries.length && [...results.values()].every((r) => r.state !== 'failed');
    await writeRefs(ctx, manifest.path, keys, { merge: !complete }).catch((e: unknown) => ctx.log.warn({ err: String(e) }, 'could not record references for gc'));
  }
  const list = entries.map((e) => results.get(e) ?? result(e, 'failed', { error: new ModelsyncError('E_ABORTED', 'not synced') }));
  return {
    ok: list.every((r) => r.state !== 'failed'),
    entries: list,
    bytesFetched: fetched,
    durationMs: ctx.clock.now() - started,
  };
}

async function publishJob(ctx: SyncContext, job: BlobJob, stamp: FileStamp | undefined, results: Map<Entry, EntryResult>, events: SyncEvents, batch: SyncBatch): Promise<void> {
  const blob = blobPath(ctx.store, job.key);
  const blobSt = stamp ?? (await stampOf(blob));
  // The committed blob's own size: a source re-resolved mid-download may have named another.
  const size = blobSt?.size ?? job.file.size ?? 0;
  const done: { e: Entry; final: string; mode: PublishMode; fail: (err: unknown) => void }[] = [];
  for (const e of job.entries) {
    const fail = (err: unknown): void => {
      const me = err instanceof ModelsyncError ? err : new ModelsyncError('E_PUBLISH', String(err), { cause: err });
      const ee = me.forEntry(e.index, e.dest);
      results.set(e, result(e, 'failed', { error: ee }));
      events.entryState?.(e, 'failed', { error: ee.message });
    };
    try {
      const mode = await publish(blob, ctx.config.modelsDir, e.dest, { batch, blobId: blobSt });
      done.push({ e, final: path.join(ctx.config.modelsDir, e.dest), mode, fail });
      if (mode !== 'present') ctx.log.info({ dest: e.dest, mode }, 'published');
      results.set(e, result(e, 'published', { key: job.key, size, commit: job.file.commit }));
      events.entryState?.(e, 'published', { size });
    } catch (err) {
      fail(err);
    }
  }
  // Every hard link made moved the inode's ctime: the stamp to remember is the one after them,
  // provided nothing but the ctime changed since the blob was verified (an edit meanwhile is
  // left for the next sync to find). One stat for the blob and all its hard-linked dests.
  const linked = done.some((d) => d.mode === 'hardlink');
  const now = blobSt && linked ? await stampOf(blob) : blobSt;
  const shared = now && blobSt && sameContentStamp(now, blobSt) ? now : undefined;
  if (shared && linked) batch.record(() => ctx.db.putVerified(blob, shared, job.key));
  for (const d of done) {
    const st = d.mode === 'hardlink' || d.mode === 'present' ? shared : await stampOf(d.final);
    batch.record(() => {
      if (st) ctx.db.putVerified(d.final, st, job.key);
      else ctx.db.forgetVerified(d.final);
      ctx.db.putEntry(d.e.dest, d.e.source.uri, job.key, size, 'published');
    }, d.fail);
  }
}

function result(e: Entry, state: EntryResult['state'], extra: { key?: EntryResult['key']; size?: number; commit?: string | undefined; error?: ModelsyncError }): EntryResult {
  return {
    index: e.index,
    dest: e.dest,
    source: e.source.uri,
    required: e.required,
    state,
    key: extra.key,
    size: extra.size,
    commit: extra.commit,
    error: extra.error && { code: extra.error.code, message: extra.error.message },
  };
}
