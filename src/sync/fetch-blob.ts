import { setMaxListeners } from 'node:events';
import { rm, stat } from 'node:fs/promises';
import { ModelsyncError, errnoCode } from '../errors.js';
import { keyName, type Source } from '../sources/source.js';
import { commitBlob, stampOf } from '../store/blobs.js';
import { blobPath } from '../store/layout.js';
import { acquireOrWait } from '../store/lease.js';
import { downloadToPart } from '../transfer/download.js';
import { checkSafetensors, hashFile, hashMismatch } from '../transfer/verify.js';
import type { SyncContext } from './context.js';
import { adoptPartial, removePart } from './partials.js';
import type { BlobJob, SyncEvents } from './types.js';

/** Clean re-downloads after a hash mismatch before the entry fails. */
const MISMATCH_ATTEMPTS = 3;

/**
 * Make the job's blob exist in the store, verified. Fetches it unless it is already there or a
 * peer on the shared volume commits it while we wait on its lease. Returns bytes fetched.
 */
export async function fetchBlob(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents): Promise<number> {
  const final = blobPath(ctx.store, job.key);
  if (await usableBlob(ctx, job, final)) return 0;
  const t = ctx.config.tunables;
  const name = keyName(job.key);
  const got = await acquireOrWait(
    { dir: ctx.store.leases, name, token: ctx.token, staleMs: t.leaseStaleMs, heartbeatMs: t.leaseHeartbeatMs, clock: ctx.clock },
    () => usableBlob(ctx, job, final),
    signal,
    () => job.entries.forEach((e) => events.entryState?.(e, 'waiting-peer')),
  );
  if (got === 'done') return 0;
  const lease = got;
  const both = AbortSignal.any([signal, lease.signal]);
  setMaxListeners(0, both);
  try {
    let fetched = 0;
    for (let attempt = 1; ; attempt++) {
      const paths = await adoptPartial(ctx.store, name, ctx.token, job.file.version);
      job.entries.forEach((e) => events.entryState?.(e, 'downloading', job.file.size === undefined ? { key: job.key } : { size: job.file.size, key: job.key }));
      let d;
      try {
        d = await downloadToPart({
          file: job.file,
          source,
          partPath: paths.part,
          journalPath: paths.journal,
          chunkSize: t.chunkSize,
          pool: ctx.pool,
          policy: ctx.policy,
          signal: both,
          log: ctx.log,
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
        throw e;
      }
      fetched += d.fetched;
      job.entries.forEach((e) => events.entryState?.(e, 'verifying'));
      if (d.hex !== job.key.hex || (job.file.size !== undefined && d.size !== job.file.size)) {
        await removePart(paths);
        events.verifyFailure?.(job.file.uri);
        const err = d.hex !== job.key.hex ? hashMismatch(job.file.uri, job.key, d.hex) : new ModelsyncError('E_SIZE_MISMATCH', `${job.file.uri}: expected ${job.file.size} bytes, got ${d.size}`, { url: job.file.uri });
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
        if (errnoCode(e) === 'ENOSPC') throw new ModelsyncError('E_DISK_FULL', `disk full committing ${job.file.uri}`, { cause: e });
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
  let size: number;
  try {
    size = (await stat(final)).size;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
  const ok = job.file.size === undefined || size === job.file.size;
  const stamp = await stampOf(final);
  const known = ctx.db.verifiedStamp(final);
  const trusted = known !== undefined && stamp !== undefined && known.ino === stamp.ino && known.size === stamp.size;
  if (ok && (trusted || !ctx.dbRecreated)) return true;
  if (ok) {
    const h = await hashFile(final, job.key.algo);
    if (h.hex === job.key.hex) {
      if (stamp) ctx.db.putVerified(final, stamp, job.key);
      return true;
    }
  }
  ctx.log.error({ blob: final }, 'store blob does not match its address; removing it');
  await rm(final, { force: true });
  return false;
}
