import { setMaxListeners } from 'node:events';
import { ModelsyncError, errnoCode } from '../errors.js';
import { keyName, type ContentKey } from '../content-key.js';
import { diskFullError, isDiskFull } from '../fs/disk-full.js';
import type { Mirror } from '../sources/mirror.js';
import type { RemoteFile, Source } from '../sources/source.js';
import type { FileStamp } from '../state/db.js';
import { blobStampOf, commitBlob } from '../store/blobs.js';
import { blobPath, blobPlace } from '../store/layout.js';
import { downloadToPart, type DownloadParams } from '../transfer/download.js';
import { contentVersion } from '../transfer/journal.js';
import type { TransferBudget } from '../transfer/transfer-budget.js';
import { safetensorsPrefix } from '../transfer/prefix-check.js';
import { checkSafetensors, hashMismatch } from '../transfer/verify.js';
import type { SyncContext } from './context.js';
import { removePart, type PartPaths } from './partials.js';
import type { SyncBatch } from './sync-batch.js';
import type { BlobJob, SyncEvents } from './types.js';

/** Clean re-downloads after a hash mismatch before the entry fails. */
const MISMATCH_ATTEMPTS = 3;
/** Fresh starts after the source changed mid-download (a replaced object), before the entry fails. */
const SOURCE_CHANGE_RESTARTS = 2;

export interface Fetched {
  /** Bytes that came over the network. */
  readonly fetched: number;
  /** Of those, the bytes that came from mirrors. */
  readonly mirrored: number;
  /** Where the blob came from: a mirror, the origin, or the volume (in the store already, or a peer's commit). */
  readonly via: 'origin' | 'mirror' | 'volume';
  /** The committed blob's key: the job's, or for a job that learns its key, the bytes' sha256. */
  readonly key: ContentKey;
  /** The committed blob's stamp (undefined only if it vanished right after the commit). */
  readonly stamp: FileStamp | undefined;
}

/** How one writer of a blob goes about it: with a lease (large blobs) or alone (small ones). */
export interface Writer {
  /** The partial (and journal) to write for this version of the source. */
  paths(version: string): Promise<PartPaths>;
  /** Aborted when this writer must stop (its lease was lost). */
  readonly signal?: AbortSignal | undefined;
  /** Awaited before every write (see DownloadParams.fence). */
  readonly fence?: (() => Promise<void>) | undefined;
  /** How the commit avoids replacing a racing writer's blob (see commitBlob). */
  readonly how: 'link' | 'rename';
  /** Its partials are new and never resumed: no journal (see DownloadParams.fresh). */
  readonly fresh?: boolean | undefined;
  /** Right before the commit; throws when this writer may no longer commit. */
  beforeCommit(paths: PartPaths): Promise<void>;
  afterCommit(paths: PartPaths): Promise<void>;
}

/**
 * Download, verify and commit the job's blob as `w` says: from the mirrors first (in order; see
 * fetchFromMirrors), else from its origin. Bytes that fail the hash or the size are discarded
 * and fetched again (a few times); a source that changed mid-download starts over from its new
 * version. All of the origin's attempts draw on one `budget` of bytes (each mirror has its own,
 * so a mirror that wastes its share never costs the origin's). The commit's folder fsync and the
 * state DB row go through the batch.
 */
export async function fetchVerified(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents, batch: SyncBatch, w: Writer, budget: TransferBudget, mirrors: readonly Mirror[] = []): Promise<Fetched> {
  // Only content named before the download can be looked up by name on a mirror.
  const viaMirrors = mirrors.length > 0 && !job.learn && job.key.algo === 'sha256';
  let mirrored = 0;
  if (viaMirrors) {
    const { fetchFromMirrors } = await import('./fetch-mirrored.js');
    const got = await fetchFromMirrors(ctx, job, mirrors, { signal, events, batch, w });
    if (got.done) return got.done;
    mirrored = got.bytes;
  }
  // Stopped by the sync, by the loss of our lease, or by the entry's own time running out.
  const both = AbortSignal.any(w.signal ? [signal, w.signal, budget.signal] : [signal, budget.signal]);
  setMaxListeners(0, both);
  // With mirrors, the partial is named by its content, so the origin resumes what a mirror began.
  const forJournal = (f: RemoteFile): RemoteFile => (viaMirrors ? { ...f, version: contentVersion(f.key) } : f);
  let fetched = mirrored;
  // The version being fetched: replaced when the source changes under us (new ETag, new CDN blob).
  let file = forJournal(job.file);
  let restarts = 0;
  for (let attempt = 1; ; attempt++) {
    const paths = await w.paths(file.version);
    job.entries.forEach((e) => events.entryState?.(e, 'downloading', job.file.size === undefined ? { key: job.key } : { size: job.file.size, key: job.key }));
    let d;
    const params = downloadParams(ctx, job, file, source, paths, both, events, w, budget);
    try {
      d = await downloadToPart(params);
    } catch (e) {
      if (w.signal?.aborted && !signal.aborted) throw w.signal.reason;
      // Out of time: the partial stays, for the next sync (or a peer) to resume.
      if (budget.signal.aborted && !signal.aborted) throw budget.signal.reason;
      // A full disk is permanent for this run, and so is a stream past its room: drop the partial
      // rather than keep a space hog.
      if (e instanceof ModelsyncError && (e.code === 'E_DISK_FULL' || e.code === 'E_TOO_LARGE' || e.code === 'E_NO_SPACE')) await removePart(paths);
      // Bytes proven not to be what the entry names: nothing to resume.
      if (e instanceof ModelsyncError && e.code === 'E_CORRUPT') await removePart(paths);
      // Bytes of two versions must never be spliced: drop them all, resolve again, start over.
      if (e instanceof ModelsyncError && e.code === 'E_SOURCE_CHANGED' && restarts < SOURCE_CHANGE_RESTARTS && !both.aborted) {
        restarts++;
        await removePart(paths);
        ctx.log.warn({ uri: file.uri, restart: restarts, err: e.message }, 'source changed during download; discarding the partial and starting over');
        file = forJournal(await resolveAgain(job, source, both));
        continue;
      }
      throw e;
    }
    fetched += d.fetched;
    job.entries.forEach((e) => events.entryState?.(e, 'verifying'));
    // Learning its key, a download can only fail on its size: its hash is what it is.
    const key: ContentKey = job.learn ? { algo: 'sha256', hex: d.hex } : job.key;
    if (d.hex !== key.hex || (file.size !== undefined && d.size !== file.size)) {
      await removePart(paths);
      events.verifyFailure?.(job.file.uri);
      const err = d.hex !== job.key.hex ? hashMismatch(job.file.uri, job.key, d.hex) : new ModelsyncError('E_SIZE_MISMATCH', `${job.file.uri}: expected ${file.size} bytes, got ${d.size}`, { url: job.file.uri });
      ctx.log.warn({ uri: job.file.uri, attempt, err: err.message }, 'downloaded bytes failed verification; discarding');
      if (attempt >= MISMATCH_ATTEMPTS) throw err;
      continue;
    }
    const stamp = await commitVerified(ctx, job, paths, key, batch, w, headerChecked(params, d.size), d.readOnly === true);
    return { fetched, mirrored, via: 'origin', stamp, key };
  }
}

/** What downloadToPart needs for one attempt at `file` from `source`. */
export function downloadParams(ctx: SyncContext, job: BlobJob, file: RemoteFile, source: Source, paths: PartPaths, signal: AbortSignal, events: SyncEvents, w: Writer, budget: TransferBudget, onBytes?: (n: number) => void): DownloadParams {
  return {
    file,
    source,
    partPath: paths.part,
    journalPath: paths.journal,
    maxChunkSize: ctx.config.tunables.maxChunkSize,
    connections: ctx.connections,
    policy: ctx.policy,
    budget,
    signal,
    log: ctx.log,
    fence: w.fence,
    fresh: w.fresh,
    wholeStream: job.learn,
    // A file that cannot be a safetensors file fails once its header is in, not at its end.
    prefixCheck: job.entries.some((e) => e.dest.endsWith('.safetensors')) ? safetensorsPrefix(file.size) : undefined,
    onBytes: (n) => {
      onBytes?.(n);
      events.bytes?.(n, job.key);
    },
    onRetry: (e, wait) => {
      ctx.log.warn({ uri: file.uri, waitMs: wait, err: e.message }, 'retrying');
      events.retry?.(file.uri, e.message, wait);
    },
  };
}

/**
 * Whether the download's own safetensors check passed on this partial with the size it now has:
 * the same check the commit would make (length, header, tensor data ending at that size), so the
 * commit need not read the header again (an open, a stat, two reads and a close: a tenth of a
 * small file's file-system calls).
 */
function headerChecked(p: DownloadParams, size: number): boolean {
  return p.prefixCheck !== undefined && p.prefixCheck.need === 0 && p.file.size !== undefined && p.file.size === size;
}

/**
 * Commit a partial whose bytes hashed to `key`: the safetensors check (unless `headerChecked`:
 * passed on these bytes during the download), the writer's fences, the state DB row. `readOnly`:
 * the download already made the partial read-only (Downloaded.readOnly).
 */
export async function commitVerified(ctx: SyncContext, job: BlobJob, paths: PartPaths, key: ContentKey, batch: SyncBatch, w: Writer, headerChecked = false, readOnly = false): Promise<FileStamp | undefined> {
  if (!headerChecked && job.entries.some((e) => e.dest.endsWith('.safetensors'))) {
    const bad = await checkSafetensors(paths.part);
    if (bad !== undefined) {
      await removePart(paths);
      throw new ModelsyncError('E_CORRUPT', `${job.file.uri}: not a valid safetensors file (${bad})`, { url: job.file.uri });
    }
  }
  await w.beforeCommit(paths);
  const final = blobPath(ctx.store, key);
  try {
    await commitBlob(paths.part, await blobPlace(ctx.store, key, (d) => batch.deferDirSync(d)), { dirs: batch, how: w.how, readOnly });
  } catch (e) {
    if (isDiskFull(e)) throw diskFullError(e, `while committing ${job.file.uri}`, { url: job.file.uri });
    // Our partial is gone from under its name: a peer that took over adopted it (or cleared it).
    if (errnoCode(e) === 'ENOENT') throw new ModelsyncError('E_LEASE_LOST', `${job.file.uri}: a peer took over this download`, { cause: e });
    throw e;
  }
  await w.afterCommit(paths);
  const stamp = await blobStampOf(final);
  if (stamp) batch.record(() => ctx.db.putVerified(final, stamp, key));
  return stamp;
}

/** The job's source resolved once more; it must still promise the same content. */
async function resolveAgain(job: BlobJob, source: Source, signal: AbortSignal): Promise<RemoteFile> {
  const [fresh] = await source.resolve(job.entries.slice(0, 1), signal);
  if (fresh === undefined || keyName(fresh.key) !== keyName(job.key)) {
    throw new ModelsyncError('E_SOURCE_CHANGED', `${job.file.uri} now resolves to other content than ${keyName(job.key)}`, { url: job.file.uri });
  }
  return fresh;
}
