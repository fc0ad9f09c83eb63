import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { ModelsyncError } from '../errors.js';
import { machineError, syscallText } from '../os-errors.js';
import type { Entry, Manifest } from '../manifest/types.js';
import type { ContentKey } from '../content-key.js';
import type { FileStamp } from '../state/db.js';
import { linkMovedCtime } from '../state/linked-stamps.js';
import { PublishedTable } from '../state/published-table.js';
import { blobStampOf, sameContentStamp, stampFrom, stampOf } from '../store/blobs.js';
import type { ClaimOwner } from '../store/claim.js';
import { blobPath, inBlobDir } from '../store/layout.js';
import { publish, type PublishMode } from '../store/publish.js';
import type { SyncContext } from './context.js';
import type { SyncBatch } from './sync-batch.js';
import { NO_BYTES, type BlobJob, type BytesBySource, type EntryResult, type SyncEvents } from './types.js';

/** A small blob a peer is fetching right now, on a first pass: the caller comes back to it. */
export const BUSY = 'busy';

export interface JobScope {
  readonly batch: SyncBatch;
  readonly claims: ClaimOwner;
  readonly firstPass: boolean;
  /**
   * Remember a published entry in the state DB (in the batch, after its folders are synced).
   * Default: the manifest's `entries` table; the on-demand layer keeps its own.
   */
  readonly record?: ((e: Entry, key: ContentKey, size: number) => void) | undefined;
  /**
   * Each entry's outcome. Called again for an entry whose state DB row fails at the batch's
   * flush, after runJob has returned: the later call is the truth.
   */
  readonly settle: (e: Entry, r: EntryResult) => void;
}

export interface JobDone {
  /** Bytes that came over the network. */
  readonly fetched: number;
  /** Bytes by where they came from (see SyncReport.bytesBySource). */
  readonly bySource: BytesBySource;
  /** The blob's key: the job's, or the one learnt from its bytes (BlobJob.learn). */
  readonly key: ContentKey | undefined;
}

/**
 * One distinct blob: fetch it (or find it in the store), then publish it to every dest that
 * wants it. Failures are per entry, in the results, never thrown.
 */
export async function runJob(ctx: SyncContext, manifest: Manifest, job: BlobJob, scope: JobScope, signal: AbortSignal, events: SyncEvents): Promise<JobDone | typeof BUSY> {
  job.entries.forEach((e) => events.entryState?.(e, 'queued'));
  try {
    const source = await ctx.sourceFor(job.entries[0]?.source.kind ?? 'hf', manifest);
    // Loaded on first use: a warm start (nothing to fetch) skips the whole transfer stack.
    const { fetchBlob } = await import('./fetch-blob.js');
    const mirrors = await ctx.mirrors.for(manifest);
    const got = await fetchBlob(ctx, job, source, signal, events, { ...scope, mirrors });
    if (got === BUSY) {
      job.entries.forEach((e) => events.entryState?.(e, 'waiting-peer'));
      return BUSY;
    }
    await publishJob(ctx, manifest.path, job, got.key, got.stamp, events, scope);
    // Only what came from the origin: a mirror's blob is on the mirror, a peer's is its to write.
    if (got.via === 'origin') ctx.writeBack.schedule(manifest, got.key, events);
    const volume = got.via === 'volume' ? (got.stamp?.size ?? job.file.size ?? 0) : 0;
    const bySource = { origin: got.fetched - got.mirrored, mirror: got.mirrored, volume };
    events.sourced?.(bySource);
    return { fetched: got.fetched, bySource, key: got.key };
  } catch (err) {
    const known = machineError(err, syscallText(err));
    const me = known ?? new ModelsyncError('E_SYNC_FAILED', String(err), { cause: err });
    if (!known) ctx.log.error({ err }, 'unexpected error');
    for (const e of job.entries) {
      const ee = me.forEntry(e.index, e.dest);
      scope.settle(e, result(e, 'failed', { error: ee }));
      events.entryState?.(e, 'failed', { error: ee.message });
    }
    return { fetched: 0, bySource: NO_BYTES, key: undefined };
  }
}

async function publishJob(ctx: SyncContext, manifestPath: string, job: BlobJob, key: ContentKey, stamp: FileStamp | undefined, events: SyncEvents, scope: JobScope): Promise<void> {
  const { batch } = scope;
  const table = new PublishedTable(ctx.db, ctx.config.modelsDir);
  const record = scope.record ?? ((e: Entry, k: ContentKey, size: number) => table.put(manifestPath, e.dest, e.source.uri, k, size));
  const blob = blobPath(ctx.store, key);
  const blobSt = stamp ?? (await blobStampOf(blob));
  // The committed blob's own size: a source re-resolved mid-download may have named another.
  const size = blobSt?.size ?? job.file.size ?? 0;
  const done: { e: Entry; final: string; mode: PublishMode; fail: (err: unknown) => void }[] = [];
  const failer = (e: Entry) => (err: unknown): void => {
    const me = err instanceof ModelsyncError ? err : new ModelsyncError('E_PUBLISH', String(err), { cause: err });
    const ee = me.forEntry(e.index, e.dest);
    scope.settle(e, result(e, 'failed', { error: ee }));
    events.entryState?.(e, 'failed', { error: ee.message });
  };
  try {
    // Linked from within its shard folder, held (fs/held-dir.ts): a shard swapped for a symlink
    // is no source, and the name must still be the inode that was verified.
    await inBlobDir(ctx.store, key, async (shardAt) => {
      const source = path.join(shardAt, key.hex);
      const st = await lstat(source, { bigint: true });
      if (!st.isFile() || (blobSt !== undefined && (String(st.ino) !== blobSt.ino || String(st.dev) !== blobSt.dev))) {
        throw new ModelsyncError('E_PATH_UNSAFE', `${blob} is not the blob that was verified (replaced, or not a file); refusing to publish it`);
      }
      for (const e of job.entries) {
        try {
          const mode = await publish(source, ctx.config.modelsDir, e.dest, { batch, blobId: blobSt ?? stampFrom(st), blobShown: blob });
          done.push({ e, final: path.join(ctx.config.modelsDir, e.dest), mode, fail: failer(e) });
          if (mode !== 'present') ctx.log.info({ dest: e.dest, mode }, 'published');
          scope.settle(e, result(e, 'published', { key, size, commit: job.file.commit }));
          events.entryState?.(e, 'published', { size });
        } catch (err) {
          failer(e)(err);
        }
      }
    });
  } catch (err) {
    for (const e of job.entries) failer(e)(err);
    return;
  }
  // Every hard link made moved the inode's ctime: the stamp to remember is the one after them,
  // provided nothing but the ctime changed since the blob was verified (an edit meanwhile is
  // left for the next sync to find). One stat for the blob and all its hard-linked dests.
  const linked = done.some((d) => d.mode === 'hardlink');
  const now = blobSt && linked ? await blobStampOf(blob) : blobSt;
  const shared = now && blobSt && sameContentStamp(now, blobSt) ? now : undefined;
  if (shared && linked && blobSt) {
    batch.record(() => {
      linkMovedCtime(ctx.db, blobSt, shared);
      ctx.db.putVerified(blob, shared, key);
    });
  }
  for (const d of done) {
    const st = d.mode === 'hardlink' || d.mode === 'present' ? shared : await stampOf(d.final);
    batch.record(() => {
      if (st) ctx.db.putVerified(d.final, st, key);
      else ctx.db.forgetVerified(d.final);
      record(d.e, key, size);
    }, d.fail);
  }
}

export function result(e: Entry, state: EntryResult['state'], extra: { key?: EntryResult['key']; size?: number; commit?: string | undefined; error?: ModelsyncError }): EntryResult {
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
