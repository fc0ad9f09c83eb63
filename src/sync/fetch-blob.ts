import { setMaxListeners } from 'node:events';
import { rm } from 'node:fs/promises';
import { ModelsyncError, errnoCode } from '../errors.js';
import { keyName, type RemoteFile, type Source } from '../sources/source.js';
import { commitBlob, stampOf } from '../store/blobs.js';
import { blobPath } from '../store/layout.js';
import { withReopen } from '../store/estale.js';
import { acquireOrWait, type Lease } from '../store/lease.js';
import { downloadToPart } from '../transfer/download.js';
import { checkSafetensors, hashFile, hashMismatch } from '../transfer/verify.js';
import type { SyncContext } from './context.js';
import { adoptPartial, removePart } from './partials.js';
import type { BlobJob, SyncEvents } from './types.js';

/** Clean re-downloads after a hash mismatch before the entry fails. */
const MISMATCH_ATTEMPTS = 3;
/** Fresh starts after the source changed mid-download (a replaced object), before the entry fails. */
const SOURCE_CHANGE_RESTARTS = 2;
/** Takeovers by peers in one fetch before the entry fails (each one means a peer made progress). */
const MAX_LEASE_LOSSES = 5;

/**
 * Make the job's blob exist in the store, verified. Fetches it unless it is already there or a
 * peer on the shared volume commits it while we wait on its lease. Returns bytes fetched.
 */
export async function fetchBlob(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents): Promise<number> {
  const final = blobPath(ctx.store, job.key);
  if (await usableBlob(ctx, job, final)) return 0;
  const t = ctx.config.tunables;
  const name = keyName(job.key);
  for (let losses = 0; ; losses++) {
    const got = await acquireOrWait(
      { dir: ctx.store.leases, name, token: ctx.token, staleMs: t.leaseStaleMs, heartbeatMs: t.leaseHeartbeatMs, clock: ctx.clock },
      () => usableBlob(ctx, job, final),
      signal,
      () => job.entries.forEach((e) => events.entryState?.(e, 'waiting-peer')),
    );
    if (got === 'done') return 0;
    try {
      return await fetchUnderLease(ctx, job, source, signal, events, got);
    } catch (e) {
      // A peer judged us dead (we were stopped, starved or cut off) and took over: yield to it,
      // and wait for its commit like any other waiter, or take over in turn if it dies too.
      if (signal.aborted || !(e instanceof ModelsyncError && e.code === 'E_LEASE_LOST') || losses >= MAX_LEASE_LOSSES) throw e;
      ctx.log.warn({ uri: job.file.uri, err: e.message }, 'lost the lease on this blob; waiting for the peer that took over');
    }
  }
}

/** Download, verify and commit while holding the blob's lease; always releases it. */
async function fetchUnderLease(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents, lease: Lease): Promise<number> {
  const final = blobPath(ctx.store, job.key);
  const t = ctx.config.tunables;
  const name = keyName(job.key);
  const both = AbortSignal.any([signal, lease.signal]);
  setMaxListeners(0, both);
  try {
    let fetched = 0;
    // The version being fetched: replaced when the source changes under us (new ETag, new CDN blob).
    let file = job.file;
    let restarts = 0;
    for (let attempt = 1; ; attempt++) {
      const paths = await adoptPartial(ctx.store, name, ctx.token, file.version);
      job.entries.forEach((e) => events.entryState?.(e, 'downloading', job.file.size === undefined ? { key: job.key } : { size: job.file.size, key: job.key }));
      let d;
      try {
        d = await downloadToPart({
          file,
          source,
          partPath: paths.part,
          journalPath: paths.journal,
          chunkSize: t.chunkSize,
          pool: ctx.pool,
          policy: ctx.policy,
          signal: both,
          log: ctx.log,
          fence: () => lease.fence(),
          onBytes: (n) => events.bytes?.(n, job.key),
          onRetry: (e, w) => {
            ctx.log.warn({ uri: job.file.uri, waitMs: w, err: e.message }, 'retrying');
            events.retry?.(job.file.uri, e.message, w);
          },
        });
      } catch (e) {
        if (lease.signal.aborted && !signal.aborted) throw lease.signal.reason;
        // A full disk is permanent for this run: drop the partial rather than keep a space hog.
        if (e instanceof ModelsyncError && e.code === 'E_DISK_FULL') await removePart(paths);
        // Bytes of two versions must never be spliced: drop them all, resolve again, start over.
        if (e instanceof ModelsyncError && e.code === 'E_SOURCE_CHANGED' && restarts < SOURCE_CHANGE_RESTARTS && !both.aborted) {
          restarts++;
          await removePart(paths);
          ctx.log.warn({ uri: file.uri, restart: restarts, err: e.message }, 'source changed during download; discarding the partial and starting over');
          file = await resolveAgain(job, source, both);
          continue;
        }
        throw e;
      }
      fetched += d.fetched;
      job.entries.forEach((e) => events.entryState?.(e, 'verifying'));
      if (d.hex !== job.key.hex || (file.size !== undefined && d.size !== file.size)) {
        await removePart(paths);
        events.verifyFailure?.(job.file.uri);
        const err = d.hex !== job.key.hex ? hashMismatch(job.file.uri, job.key, d.hex) : new ModelsyncError('E_SIZE_MISMATCH', `${job.file.uri}: expected ${file.size} bytes, got ${d.size}`, { url: job.file.uri });
        ctx.log.warn({ uri: job.file.uri, attempt, err: err.message }, 'downloaded bytes failed verification; discarding');
        if (attempt >= MISMATCH_ATTEMPTS) throw err;
        continue;
      }
      if (job.entries.some((e) => e.dest.endsWith('.safetensors'))) {
        const bad = await checkSafetensors(paths.part);
        if (bad !== undefined) {
          await removePart(paths);
          throw new ModelsyncError('E_CORRUPT', `${job.file.uri}: not a valid safetensors file (${bad})`, { url: job.file.uri });
        }
      }
      if (!(await lease.check())) throw lease.signal.reason;
      try {
        await commitBlob(paths.part, final);
      } catch (e) {
        if (errnoCode(e) === 'ENOSPC' || errnoCode(e) === 'EDQUOT') throw new ModelsyncError('E_DISK_FULL', `disk full committing ${job.file.uri}`, { cause: e });
        // Our partial is gone from under its name: a peer that took over adopted it.
        if (errnoCode(e) === 'ENOENT') throw new ModelsyncError('E_LEASE_LOST', `${job.file.uri}: a peer took over this download`, { cause: e });
        throw e;
      }
      await rm(paths.journal, { force: true });
      const st = await stampOf(final);
      if (st) ctx.db.putVerified(final, st, job.key);
      return fetched;
    }
  } finally {
    await lease.release();
  }
}

/**
 * A blob in the store was verified by whoever committed it (blobs are read-only and content-
 * addressed). Its size is always checked; after the state DB was lost, it is re-hashed once.
 */
async function usableBlob(ctx: SyncContext, job: BlobJob, final: string): Promise<boolean> {
  const stamp = await withReopen(() => stampOf(final));
  if (!stamp) return false;
  const ok = job.file.size === undefined || stamp.size === job.file.size;
  const known = ctx.db.verifiedStamp(final);
  const trusted = known !== undefined && known.ino === stamp.ino && known.size === stamp.size;
  if (ok && (trusted || !ctx.dbRecreated)) return true;
  if (ok) {
    const h = await withReopen(() => hashFile(final, job.key.algo));
    if (h.hex === job.key.hex) {
      ctx.db.putVerified(final, stamp, job.key);
      return true;
    }
  }
  ctx.log.error({ blob: final }, 'store blob does not match its address; removing it');
  await rm(final, { force: true });
  return false;
}

/** The job's source resolved once more; it must still promise the same content. */
async function resolveAgain(job: BlobJob, source: Source, signal: AbortSignal): Promise<RemoteFile> {
  const [fresh] = await source.resolve(job.entries.slice(0, 1), signal);
  if (fresh === undefined || keyName(fresh.key) !== keyName(job.key)) {
    throw new ModelsyncError('E_SOURCE_CHANGED', `${job.file.uri} now resolves to other content than ${keyName(job.key)}`, { url: job.file.uri });
  }
  return fresh;
}
