import path from 'node:path';
import PQueue from 'p-queue';
import { ModelsyncError } from '../errors.js';
import type { Entry, Manifest } from '../manifest/types.js';
import { keyName } from '../sources/source.js';
import { stampOf } from '../store/blobs.js';
import { blobPath } from '../store/layout.js';
import { publish } from '../store/publish.js';
import type { SyncContext } from './context.js';
import { buildPlan, checkSpace } from './plan.js';
import { writeRefs } from './refs.js';
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
  // Files in flight are bounded too: each holds a file handle, a hasher and a lease.
  const files = new PQueue({ concurrency: Math.max(4, ctx.config.tunables.connections) });
  await Promise.all(
    plan.jobs.map((job) =>
      files.add(async () => {
        job.entries.forEach((e) => events.entryState?.(e, 'queued'));
        try {
          const source = await ctx.sourceFor(job.entries[0]?.source.kind ?? 'hf', manifest);
          // Loaded on first use: a warm start (nothing to fetch) skips the whole transfer stack.
          const { fetchBlob } = await import('./fetch-blob.js');
          const n = await fetchBlob(ctx, job, source, signal, events);
          fetched += n;
          await publishJob(ctx, job, results, events);
        } catch (err) {
          const me = err instanceof ModelsyncError ? err : new ModelsyncError('E_SYNC_FAILED', String(err), { cause: err });
          if (!(err instanceof ModelsyncError)) ctx.log.error({ err }, 'unexpected error');
          for (const e of job.entries) {
            const ee = me.forEntry(e.index, e.dest);
            results.set(e, result(e, 'failed', { error: ee }));
            events.entryState?.(e, 'failed', { error: ee.message });
          }
        }
      }),
    ),
  );
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

async function publishJob(ctx: SyncContext, job: BlobJob, results: Map<Entry, EntryResult>, events: SyncEvents): Promise<void> {
  const blob = blobPath(ctx.store, job.key);
  // The committed blob's own size: a source re-resolved mid-download may have named another.
  const size = (await stampOf(blob))?.size ?? job.file.size ?? 0;
  for (const e of job.entries) {
    try {
      const mode = await publish(blob, ctx.config.modelsDir, e.dest);
      const final = path.join(ctx.config.modelsDir, e.dest);
      const st = await stampOf(final);
      ctx.db.transaction(() => {
        if (st) ctx.db.putVerified(final, st, job.key);
        ctx.db.putEntry(e.dest, e.source.uri, job.key, size, 'published');
      });
      if (mode !== 'present') ctx.log.info({ dest: e.dest, mode }, 'published');
      results.set(e, result(e, 'published', { key: job.key, size, commit: job.file.commit }));
      events.entryState?.(e, 'published', { size });
    } catch (err) {
      const me = err instanceof ModelsyncError ? err : new ModelsyncError('E_PUBLISH', String(err), { cause: err });
      const ee = me.forEntry(e.index, e.dest);
      results.set(e, result(e, 'failed', { error: ee }));
      events.entryState?.(e, 'failed', { error: ee.message });
    }
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
