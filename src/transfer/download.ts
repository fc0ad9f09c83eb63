import { setMaxListeners } from 'node:events';
import { lstat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { REWRITE_NO_FOLLOW, UPDATE_NO_FOLLOW, openNoFollow } from '../fs/no-follow.js';
import { ModelsyncError, errnoCode } from '../errors.js';
import { diskFullError, isDiskFull } from '../fs/disk-full.js';
import type { Logger } from '../log.js';
import type { OpenBody, RemoteFile, Source } from '../sources/source.js';
import type { BodyReader } from './body-reader.js';
import type { ConnectionBudget } from './budget.js';
import { ChunkMap, MIN_STEAL, chunkSizeFor, type Piece } from './chunks.js';
import { networkError } from './network-error.js';
import { bootId } from './boot-id.js';
import { readJournal } from './journal.js';
import { journalFlusher, resumePoint } from './journal-flusher.js';
import { PrefixWatch, type PrefixCheck } from './prefix-check.js';
import { PrefixHasher } from './prefix-hasher.js';
import { SerialWriter } from './serial-writer.js';
import { ThreadHasher, hashThreadFits } from './thread-hasher.js';
import { RateFloor, isTooSlow } from './rate-floor.js';
import { isProgress, withRetry, type RetryPolicy } from './retry.js';
import { roomForUnsized, tooLarge, type Room } from './unsized-room.js';
import type { TransferBudget } from './transfer-budget.js';
import { keyHasher } from './verify.js';

export interface DownloadParams {
  readonly file: RemoteFile;
  readonly source: Source;
  /** Our partial file (unique to this writer) and its journal. */
  readonly partPath: string;
  readonly journalPath: string;
  /** The largest chunk (--chunk-size): see chunkSizeFor. */
  readonly maxChunkSize: number;
  /** The connection budget, shared by every file of the sync: each chunk's request takes one of its connections. */
  readonly connections: ConnectionBudget;
  readonly policy: RetryPolicy;
  /** The entry's budget across every attempt and every download of it (see TransferBudget). */
  readonly budget: TransferBudget;
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly onBytes?: ((n: number) => void) | undefined;
  /** Called when a retryable failure is retried. */
  readonly onRetry?: ((e: ModelsyncError, waitMs: number) => void) | undefined;
  /**
   * Awaited before every write to the partial or its journal; rejects when this writer may no
   * longer write (its lease on the shared volume was lost): see Lease.fence.
   */
  readonly fence?: (() => Promise<void>) | undefined;
  /**
   * One stream from byte 0, no ranges and no resume: for bytes no hash was promised for (trust
   * on first use), where chunks of two versions of a file that changed meanwhile could never be
   * told apart from one version.
   */
  readonly wholeStream?: boolean | undefined;
  /** A check of the file's first bytes, made as soon as they are in (a safetensors header). */
  readonly prefixCheck?: PrefixCheck | undefined;
  /**
   * The partial is new, named for this attempt alone, and never resumed or adopted (a small
   * blob under its claim): no journal is looked for, and none is kept. Its bytes still reach
   * stable storage before the commit (the final fsync); only resume bookkeeping is skipped: a
   * journal read, a stat, and for a download that outlives a pause, journal writes and
   * fdatasyncs (a tenth of a small file's file-system calls).
   */
  readonly fresh?: boolean | undefined;
}

export interface Downloaded {
  readonly hex: string;
  readonly size: number;
  /** Bytes that came over the network in this run (resumed bytes are not counted). */
  readonly fetched: number;
  readonly resumedFrom: number;
  /**
   * The partial was made read-only (0444) through the descriptor that wrote it, after its final
   * fsync: a fresh partial, as the commit wants it (commitBlob's `readOnly`), without an open by
   * name just to change its mode.
   */
  readonly readOnly?: boolean;
}

/** The server would not give us ranges we can trust: fall back to one whole stream. */
class Unranged extends Error {
  constructor(readonly why: string) {
    super(why);
  }
}

/**
 * Download a file into its partial: ranged chunks over several connections, written in place,
 * hashed as the contiguous prefix grows, resumable from the journal. Returns the digest; the
 * caller compares it and commits. Nothing here ever touches a final path.
 */
export async function downloadToPart(p: DownloadParams): Promise<Downloaded> {
  let size = p.file.size;
  // No metadata gave a size: whatever the server says (or does not) must fit in this room.
  const room = size === undefined ? await roomForUnsized(path.dirname(p.partPath), p.budget.maxUnsized) : undefined;
  if (p.wholeStream) return p.budget.track(() => singleStream(p, undefined, room));
  if (size === undefined) {
    // A server that answers the probe with the whole body gets its rate floor from that body on.
    const floor = new RateFloor(p.budget.rate, p.signal);
    const probe = await p.budget.track(() =>
      withRetry(() => p.source.open(p.file, { range: { start: 0, end: 1 }, signal: floor.signal }), p.policy, {
        signal: p.signal,
        onRetry: (e, w) => p.onRetry?.(e, w),
      }),
    );
    if (probe.status === 200) return p.budget.track(() => singleStream(p, { res: probe, floor }, room));
    probe.body.destroy();
    floor.stop();
    size = probe.range?.total;
    if (size === undefined) return p.budget.track(() => singleStream(p, undefined, room));
    if (room && size > room.bytes) throw tooLarge(p.file.uri, room, size);
    p.budget.sized(size);
  }
  try {
    return await chunked(p, size);
  } catch (e) {
    if (!(e instanceof Unranged)) throw e;
    p.log.warn({ uri: p.file.uri, why: e.why }, 'server does not serve usable ranges; downloading as one stream');
    return p.budget.track(() => singleStream(p, undefined, room));
  }
}

async function chunked(p: DownloadParams, size: number): Promise<Downloaded> {
  const journal = p.fresh ? undefined : await readJournal(p.journalPath);
  let partSize: number | undefined;
  try {
    // lstat: a partial that is a symlink (planted) is not ours to resume; the open below refuses it.
    const st = journal === undefined ? undefined : await lstat(p.partPath);
    partSize = st?.isFile() ? st.size : undefined;
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  // Resume only when the journal describes this very version and the partial has the right shape.
  const resumable = journal !== undefined && journal.version === p.file.version && journal.size === size && partSize === size;
  const boot = await bootId();
  const from = resumable ? resumePoint(journal, boot) : { written: [], durable: [] };
  const map = new ChunkMap(size, resumable ? journal.chunkSize : chunkSizeFor(size, p.maxChunkSize), from.written);
  const fh = await openNoFollow(p.partPath, resumable ? UPDATE_NO_FOLLOW : REWRITE_NO_FOLLOW, 0o644);
  const resumedFrom = map.bytesOnDisk();
  if (resumable && resumedFrom > 0) p.log.info({ uri: p.file.uri, bytes: resumedFrom }, 'resuming partial download');
  let fetched = 0;
  const ctrl = new AbortController();
  // Every chunk, retry sleep and request listens on this one signal.
  setMaxListeners(0, ctrl.signal);
  const onAbort = (): void => ctrl.abort(p.signal.reason);
  p.signal.addEventListener('abort', onAbort, { once: true });
  // A file big enough to come over several connections is big enough for the hash thread.
  const hasher = map.count > 1 && hashThreadFits() ? new ThreadHasher(p.partPath, map, p.file.key.algo) : new PrefixHasher(fh, map, keyHasher(p.file.key.algo, size));

  const durable = map.written.map((n, i) => Math.min(n, from.durable[i] ?? 0));
  const flush = p.fresh ? NO_JOURNAL : journalFlusher({ fh, journalPath: p.journalPath, version: p.file.version, map, durable, boot, log: p.log, fence: p.fence });
  const watch = p.prefixCheck && new PrefixWatch(p.prefixCheck, fh, () => map.contiguousEnd(), p.file.uri);
  const writer = new SerialWriter(fh);
  // Bytes just written, still in memory: what extends the hashed prefix is hashed from here, and a
  // first block is checked from here, rather than read back.
  const offer = (b: Buffer, at: number): void => {
    if (hasher instanceof PrefixHasher) hasher.offer(b, at);
    watch?.offer(b, at);
  };
  // A resumed partial may hold the whole header already.
  watch?.notify();
  try {
    // Extending the file can fail already: EFBIG under a file-size limit (RLIMIT_FSIZE, quotas).
    // A fresh partial too small to be split is written from its first byte to its last in
    // order, so it grows to its size by its writes (which report a full disk the same way).
    const inOrder = p.fresh === true && size < 2 * MIN_STEAL;
    if (!resumable && !inOrder) await fh.truncate(size).catch((e: unknown) => Promise.reject(isDiskFull(e) ? diskFullError(e, `while writing ${p.file.uri}`, { url: p.file.uri }) : e));
    const hashing = hasher.run();
    hashing.catch(() => ctrl.abort());
    // A chunk that gives up (disk full, source changed, ranges unusable, retries spent) dooms
    // this attempt: stop the other chunks now instead of letting them run to their own end.
    const stopAll = (e: unknown): never => {
      ctrl.abort(e);
      throw e;
    };
    const route = { host: hostOf(p.source, p.file), priority: p.connections.nextPriority(), signal: ctrl.signal };
    // One lane per piece a connection could work on: each takes a piece once it has a connection
    // (so pieces go to connections in offset order, and the last ones are split between them),
    // and gives the connection back between pieces and while it waits to retry.
    const lane = async (): Promise<void> => {
      for (;;) {
        let piece: Piece | undefined;
        let idle = false;
        await withRetry(
          (ctx) =>
            p.connections.request(
              (slot) =>
                p.budget.track(async () => {
                  if (ctrl.signal.aborted) throw ctrl.signal.reason;
                  piece ??= map.next();
                  if (piece === undefined) {
                    idle = true;
                    return;
                  }
                  const got = piece;
                  const before = got.pos;
                  try {
                    await fetchPiece(p, writer, map, got, ctrl.signal, offer, (n) => {
                      fetched += n;
                      slot.bytes(n);
                      hasher.notify();
                      watch?.notify();
                      // Not retryable: every lane stops with it.
                      if (watch?.failed) throw watch.failed;
                    });
                  } catch (e) {
                    if (!isTooSlow(e) && isProgress(got.pos - before, got.end - before)) ctx.madeProgress();
                    throw e;
                  }
                }),
              route,
            ),
          p.policy,
          { signal: ctrl.signal, onRetry: (e, w) => p.onRetry?.(e, w) },
        ).catch(stopAll);
        if (idle) return;
      }
    };
    // Beyond one lane per chunk, lanes that can only split others' pieces: a host's count may grow past the chunks.
    const splittable = Math.floor((size - map.bytesOnDisk()) / (2 * MIN_STEAL));
    const tasks = Array.from({ length: Math.max(1, Math.min(p.connections.hostCeiling, Math.max(map.missing, splittable))) }, lane);
    const results = await Promise.allSettled(tasks);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      ctrl.abort(failed.reason);
      // Prefer the real cause over the AbortErrors it set off in the other chunks.
      const real = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !isAbortLike(r.reason));
      throw (real ?? failed).reason;
    }
    await watch?.idle();
    if (watch?.failed) throw watch.failed;
    hasher.notify();
    const hex = await hashing;
    if (hex === undefined) throw new ModelsyncError('E_ABORTED', 'hashing stopped');
    await fh.sync();
    if (p.fresh) await fh.chmod(0o444);
    return { hex, size, fetched, resumedFrom, readOnly: p.fresh === true };
  } catch (e) {
    hasher.stop();
    ctrl.abort();
    await flush.final().catch(() => undefined);
    throw e;
  } finally {
    await flush.stop();
    p.signal.removeEventListener('abort', onAbort);
    await fh.close();
  }
}

/** The flusher of a fresh partial (DownloadParams.fresh): nothing to keep. */
const NO_JOURNAL: ReturnType<typeof journalFlusher> = { stop: () => Promise.resolve(), final: () => Promise.resolve() };

function isAbortLike(e: unknown): boolean {
  return (e instanceof ModelsyncError && e.code === 'E_ABORTED') || (e instanceof Error && e.name === 'AbortError');
}

/** Fetch what is missing of a piece, up to its end (which a split may lower meanwhile), reporting each batch of bytes written. */
async function fetchPiece(
  p: DownloadParams,
  writer: SerialWriter,
  map: ChunkMap,
  piece: Piece,
  signal: AbortSignal,
  written: ((b: Buffer, at: number) => void) | undefined,
  progressed: (n: number) => void,
): Promise<void> {
  const start = piece.pos;
  const end = piece.end;
  if (start >= end) return;
  const whole = start === 0 && end === map.size;
  const floor = new RateFloor(p.budget.rate, signal);
  try {
    const res = await p.source.open(p.file, { range: { start, end }, signal: floor.signal }).catch((e: unknown) => {
      // A 206 whose Content-Range (or length) makes no sense is a server whose ranges we cannot use.
      throw e instanceof ModelsyncError && e.code === 'E_RANGE' ? new Unranged(e.message) : e;
    });
    if (res.status === 200 && !whole) {
      res.body.destroy();
      throw new Unranged('answered 200 with the whole body to a Range request');
    }
    if (res.status === 206 && (res.range?.start !== start || res.range.end > end || (res.range.total !== undefined && res.range.total !== map.size))) {
      res.body.destroy();
      throw new Unranged(`asked for bytes ${start}-${end - 1}, got Content-Range ${res.range?.start}-${(res.range?.end ?? 0) - 1}/${res.range?.total ?? '*'}`);
    }
    const from = res.origin ?? p.file.uri;
    floor.start(from);
    const bound = { limit: () => piece.end, reserve: (to: number) => void (piece.reserved = to) };
    await streamInto(res.body, writer, start, bound, from, (n) => {
      p.budget.charge(n, from);
      floor.count(n);
      map.wrote(piece, n);
      p.onBytes?.(n);
      progressed(n);
    }, written, p.fence);
  } catch (e) {
    throw floor.tripped ?? e;
  } finally {
    floor.stop();
  }
  if (piece.pos < piece.end) {
    throw new ModelsyncError('E_NETWORK', `${p.file.uri}: body ended at byte ${piece.pos} of ${piece.end} (connection cut or short body)`, { url: p.file.uri, retryable: true });
  }
}

/** Where a body may go: below `limit()` (read before every block), with each block announced to `reserve` before it is written. */
interface Bound {
  limit(): number;
  reserve?(to: number): void;
}

/**
 * Copy a response body to [start, limit) of the file, one positional write per block. Bytes past
 * the limit are never written: a body longer than promised is cut off there, and so is one
 * whose piece was split meanwhile (its connection is closed, the rest of its answer unread).
 */
async function streamInto(
  body: BodyReader,
  writer: SerialWriter,
  start: number,
  bound: Bound,
  from: string,
  wrote: (n: number) => void,
  onPiece?: (b: Buffer, at: number) => void,
  fence?: () => Promise<void>,
): Promise<number> {
  let pos = start;
  try {
    for (let block = await body.next(); block !== null; block = await body.next()) {
      const room = bound.limit() - pos;
      const piece = block.length > room ? block.subarray(0, room) : block;
      bound.reserve?.(pos + piece.length);
      if (fence) await fence();
      await writer.write(piece, pos);
      // Only written bytes are hashed: a retry must not hash a piece twice.
      onPiece?.(piece, pos);
      pos += piece.length;
      wrote(piece.length);
      if (piece.length < block.length) break;
    }
  } catch (e) {
    if (isDiskFull(e)) throw diskFullError(e, `while writing ${from}`, { url: from });
    throw e instanceof ModelsyncError ? e : networkError(e, /^https?:/.test(from) ? from : 'http://unknown.invalid/');
  } finally {
    body.destroy();
  }
  return pos - start;
}

/** The host a file's requests count against (budget.ts): the source's word, or its URI's host. */
function hostOf(source: Source, file: RemoteFile): string {
  if (source.host) return source.host(file);
  try {
    return new URL(file.uri).host || file.uri;
  } catch {
    return file.uri;
  }
}

/**
 * No usable ranges: one stream from byte 0, hashed as it is written. A retry starts over,
 * because without ranges there is nothing to resume from: so no attempt here is progress, and
 * a body that always ends short gives up after the policy's attempts.
 */
async function singleStream(p: DownloadParams, first: { res: OpenBody; floor: RateFloor } | undefined, room: Room | undefined): Promise<Downloaded> {
  let opened = first;
  let fetched = 0;
  return withRetry(
    async () => {
      const floor = opened?.floor ?? new RateFloor(p.budget.rate, p.signal);
      const res = opened?.res ?? (await p.source.open(p.file, { range: undefined, signal: floor.signal }).catch((e: unknown) => {
        floor.stop();
        throw e;
      }));
      opened = undefined;
      let fh: FileHandle | undefined;
      let written = 0;
      let watch: PrefixWatch | undefined;
      try {
        const declared = res.length;
        if (room && declared !== undefined && declared > room.bytes) throw tooLarge(p.file.uri, room, declared);
        // One byte past the room is how a stream that would not end is told from one that fits.
        const limit = p.file.size ?? declared ?? (room ? room.bytes + 1 : Number.MAX_SAFE_INTEGER);
        await p.fence?.();
        fh = await openNoFollow(p.partPath, REWRITE_NO_FOLLOW, 0o644);
        watch = p.prefixCheck && new PrefixWatch(p.prefixCheck, fh, () => written, p.file.uri);
        const hash = keyHasher(p.file.key.algo, p.file.size ?? declared);
        const from = res.origin ?? p.file.uri;
        floor.start(from);
        const total = await streamInto(
          res.body,
          new SerialWriter(fh),
          0,
          { limit: () => limit },
          from,
          (n) => {
            p.budget.charge(n, from);
            floor.count(n);
            fetched += n;
            written += n;
            p.onBytes?.(n);
            watch?.notify();
            if (watch?.failed) throw watch.failed;
          },
          (b, at) => {
            hash.update(b);
            watch?.offer(b, at);
          },
          p.fence,
        );
        if (room && total > room.bytes) throw tooLarge(p.file.uri, room, undefined);
        if (declared !== undefined && total < declared) {
          throw new ModelsyncError('E_NETWORK', `${p.file.uri}: body ended at byte ${total} of ${declared}`, { url: p.file.uri, retryable: true });
        }
        if (p.file.size !== undefined && total < p.file.size) {
          throw new ModelsyncError('E_NETWORK', `${p.file.uri}: body ended at byte ${total} of ${p.file.size}`, { url: p.file.uri, retryable: true });
        }
        await watch?.idle();
        if (watch?.failed) throw watch.failed;
        await fh.sync();
        return { hex: hash.digest('hex'), size: total, fetched, resumedFrom: 0 };
      } catch (e) {
        res.body.destroy();
        throw floor.tripped ?? e;
      } finally {
        floor.stop();
        await fh?.close();
      }
    },
    p.policy,
    { signal: p.signal, onRetry: (e, w) => p.onRetry?.(e, w) },
  );
}
