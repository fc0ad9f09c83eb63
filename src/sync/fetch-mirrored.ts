import { setMaxListeners } from 'node:events';
import { ModelsyncError } from '../errors.js';
import type { Mirror } from '../sources/mirror.js';
import { downloadToPart } from '../transfer/download.js';
import { TransferBudget } from '../transfer/transfer-budget.js';
import { hashMismatch } from '../transfer/verify.js';
import type { SyncContext } from './context.js';
import { commitVerified, downloadParams, type Fetched, type Writer } from './fetch-verified.js';
import { removePart } from './partials.js';
import type { SyncBatch } from './sync-batch.js';
import type { BlobJob, SyncEvents } from './types.js';

/** A mirror's answer about one blob that says nothing about the mirror as a whole: it is not benched for it. */
const BLOB_LEVEL: ReadonlySet<string> = new Set(['E_SIZE_MISMATCH', 'E_HASH_MISMATCH', 'E_SOURCE_CHANGED', 'E_RANGE', 'E_CORRUPT']);
/** Failures that are ours or the volume's, not the mirror's: no other source would do better. */
const OURS: ReadonlySet<string> = new Set(['E_DISK_FULL', 'E_NO_SPACE', 'E_LEASE_LOST', 'E_ABORTED']);

export interface MirrorScope {
  /** The sync's own signal. */
  readonly signal: AbortSignal;
  readonly events: SyncEvents;
  readonly batch: SyncBatch;
  readonly w: Writer;
}

/**
 * Try each usable mirror in order for the job's blob. A miss goes on to the next; any other
 * failure (down, 5xx or timeouts after the usual bounded retries, wrong size, wrong bytes, a
 * hostile redirect) goes on too, with a warning: a mirror never fails an entry its origin can
 * still serve. The partial is named by content (contentVersion), so what a failing mirror wrote
 * is resumed by the next source; bytes that failed the hash are discarded first. `done` is
 * undefined when the origin has to finish the job; `bytes` came from mirrors either way.
 */
export async function fetchFromMirrors(ctx: SyncContext, job: BlobJob, mirrors: readonly Mirror[], s: MirrorScope): Promise<{ done: Fetched | undefined; bytes: number }> {
  let bytes = 0;
  const t = ctx.config.tunables;
  for (const m of mirrors) {
    if (!ctx.mirrors.usable(m)) continue;
    // Each mirror is held to the limits an origin is (bytes, minimum rate), on a budget of its
    // own: a mirror that wastes its share falls through, and the origin still has all of its.
    const budget = new TransferBudget(`${m.ref.uri}${job.key.algo}/${job.key.hex}`, job.file.size, { fetchRatio: t.fetchRatio, minRate: t.minRate, windowMs: t.minRateWindowMs, maxUnsized: t.maxUnsized });
    const both = AbortSignal.any(s.w.signal ? [s.signal, s.w.signal, budget.signal] : [s.signal, budget.signal]);
    setMaxListeners(0, both);
    const fallThrough = (e: unknown, what: string): void => {
      if (s.w.signal?.aborted && !s.signal.aborted) throw s.w.signal.reason;
      if (budget.signal.aborted && !s.signal.aborted) e = budget.signal.reason;
      else if (s.signal.aborted || !(e instanceof ModelsyncError) || OURS.has(e.code)) throw e;
      if (!(e instanceof ModelsyncError)) throw e;
      if (!BLOB_LEVEL.has(e.code)) ctx.mirrors.bench(m);
      ctx.log.warn({ mirror: m.ref.uri, uri: job.file.uri, code: e.code, err: e.message, benched: !BLOB_LEVEL.has(e.code) }, `${what}; trying the next source`);
      s.events.mirrorFailure?.(m.ref.uri, e.code);
    };
    let file;
    try {
      file = await budget.track(() => m.locate(job.key, job.file.size, both));
    } catch (e) {
      fallThrough(e, 'mirror failed');
      continue;
    }
    if (file === undefined) {
      ctx.log.debug({ mirror: m.ref.uri, uri: job.file.uri }, 'not on this mirror');
      s.events.mirrorMiss?.(m.ref.uri);
      continue;
    }
    const paths = await s.w.paths(file.version);
    job.entries.forEach((e) => s.events.entryState?.(e, 'downloading', file.size === undefined ? { key: job.key } : { size: file.size, key: job.key }));
    let d;
    try {
      d = await downloadToPart(downloadParams(ctx, job, file, m.source, paths, both, s.events, s.w, budget, (n) => (bytes += n)));
    } catch (e) {
      // A replaced object's bytes must not be spliced with the next source's, and a stream past
      // its room is a space hog; a partial cut short by a network failure (or a slow mirror) is
      // kept for the next source to resume.
      if (e instanceof ModelsyncError && ['E_SOURCE_CHANGED', 'E_DISK_FULL', 'E_TOO_LARGE', 'E_NO_SPACE'].includes(e.code)) await removePart(paths);
      fallThrough(e, 'download from mirror failed');
      continue;
    }
    job.entries.forEach((e) => s.events.entryState?.(e, 'verifying'));
    if (d.hex !== job.key.hex || (job.file.size !== undefined && d.size !== job.file.size)) {
      await removePart(paths);
      s.events.verifyFailure?.(file.uri);
      const err = d.hex !== job.key.hex ? hashMismatch(file.uri, job.key, d.hex) : new ModelsyncError('E_SIZE_MISMATCH', `${file.uri}: expected ${job.file.size} bytes, got ${d.size}`, { url: file.uri });
      fallThrough(err, 'mirror served bytes that failed verification (discarded)');
      continue;
    }
    const stamp = await commitVerified(ctx, job, paths, job.key, s.batch, s.w);
    ctx.log.info({ mirror: m.ref.uri, uri: job.file.uri, bytes: d.fetched }, 'fetched from mirror');
    return { done: { fetched: bytes, mirrored: bytes, via: 'mirror', stamp, key: job.key }, bytes };
  }
  return { done: undefined, bytes };
}
