import { rm } from 'node:fs/promises';
import { ModelsyncError } from '../errors.js';
import { keyName } from '../content-key.js';
import type { Mirror } from '../sources/mirror.js';
import type { Source } from '../sources/source.js';
import type { FileStamp } from '../state/db.js';
import { blobPath } from '../store/layout.js';
import { Lease, acquireOrWait } from '../store/lease.js';
import { SMALL_BLOB_BYTES, type ClaimOwner } from '../store/claim.js';
import { TransferBudget } from '../transfer/transfer-budget.js';
import type { SyncContext } from './context.js';
import { fetchVerified, type Fetched } from './fetch-verified.js';
import { usableBlob } from './usable-blob.js';
import { adoptPartial, partPaths, removePart } from './partials.js';
import { BUSY } from './run-job.js';
import type { SyncBatch } from './sync-batch.js';
import type { BlobJob, SyncEvents } from './types.js';

/** Takeovers by peers in one fetch before the entry fails (each one means a peer made progress). */
const MAX_LEASE_LOSSES = 5;



/** What the fetches of one sync share. */
export interface FetchScope {
  readonly batch: SyncBatch;
  /** The owner of this sync's claims on small blobs. */
  readonly claims: ClaimOwner;
  /** A first pass skips the small blobs a peer has claimed (BUSY) instead of waiting on them. */
  readonly firstPass: boolean;
  /** The manifest's mirrors, tried before the origin (see fetchFromMirrors). */
  readonly mirrors?: readonly Mirror[] | undefined;
}

/** Unique partial names for small-blob writers within this process (two syncs may overlap). */
let writerSeq = 0;

/**
 * Make the job's blob exist in the store, verified. Fetches it unless it is already there or a
 * peer on the shared volume commits it while we wait on its lease.
 */
export async function fetchBlob(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents, scope: FetchScope): Promise<Fetched | typeof BUSY> {
  // One fetch per blob in this process: a manifest sync and on-demand jobs run side by side, and
  // leases (which share this process's token) are for peers. The later one waits, then finds
  // the blob in the store, or, when the first failed, tries itself.
  const name = keyName(job.key);
  for (let running = ctx.inflight.get(name); running !== undefined; running = ctx.inflight.get(name)) {
    job.entries.forEach((e) => events.entryState?.(e, 'waiting-peer'));
    await running;
  }
  const mine = fetchBlobOnce(ctx, job, source, signal, events, scope);
  const settled = mine.then(
    () => undefined,
    () => undefined,
  );
  ctx.inflight.set(name, settled);
  try {
    return await mine;
  } finally {
    if (ctx.inflight.get(name) === settled) ctx.inflight.delete(name);
  }
}

async function fetchBlobOnce(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents, scope: FetchScope): Promise<Fetched | typeof BUSY> {
  const { batch } = scope;
  const t = ctx.config.tunables;
  // One budget for every attempt at this blob in this sync, lease losses and retakes included.
  const budget = new TransferBudget(job.file.uri, job.file.size, { fetchRatio: t.fetchRatio, minRate: t.minRate, windowMs: t.minRateWindowMs, maxUnsized: t.maxUnsized });
  if (job.learn) return fetchAlone(ctx, job, source, signal, events, batch, budget, scope.mirrors);
  const final = blobPath(ctx.store, job.key);
  const small = job.file.size !== undefined && job.file.size <= SMALL_BLOB_BYTES;
  // A small blob on a first pass is looked for once, under its claim (below): the plan has just
  // found it missing, and a look before the claim would only repeat the one after it.
  const have = small && scope.firstPass ? undefined : await usableBlob(ctx, job, final, batch);
  if (have) return { fetched: 0, mirrored: 0, via: 'volume', stamp: have, key: job.key };
  // A peer may hold the lease twice as long as its own download may take (see TransferBudget).
  const patienceMs = budget.maxMs === undefined ? undefined : 2 * budget.maxMs + t.leaseStaleMs;
  const opts = { dir: ctx.store.at.leases, name: keyName(job.key), token: ctx.token, staleMs: t.leaseStaleMs, heartbeatMs: t.leaseHeartbeatMs, clock: ctx.clock, claim: small ? scope.claims : undefined, patienceMs };
  // Nodes that start one manifest together would otherwise queue up behind each other's claims,
  // a slot each, polling: on a first pass a claimed small blob is skipped, and by the time it
  // comes round again its holder has usually committed it.
  if (small && scope.firstPass) {
    const claim = await Lease.tryAcquire(opts);
    if (!claim) return BUSY;
    // A peer may have committed and released it between our look and our claim.
    const now = await usableBlob(ctx, job, final, batch).catch(async (e: unknown) => {
      await claim.release();
      throw e;
    });
    if (now) {
      await claim.release();
      return { fetched: 0, mirrored: 0, via: 'volume', stamp: now, key: job.key };
    }
    return fetchSmall(ctx, job, source, signal, events, batch, claim, budget, scope.mirrors);
  }
  let done: FileStamp | undefined;
  const isDone = async (): Promise<boolean> => {
    done = await usableBlob(ctx, job, final, batch);
    return done !== undefined;
  };
  for (let losses = 0; ; losses++) {
    const got = await acquireOrWait(
      opts,
      isDone,
      signal,
      () => job.entries.forEach((e) => events.entryState?.(e, 'waiting-peer')),
      (holder) => ctx.log.warn({ uri: job.file.uri, holder, patienceMs }, 'a peer has held this blob longer than its download may take; taking it over'),
    );
    if (got === 'done') return { fetched: 0, mirrored: 0, via: 'volume', stamp: done, key: job.key };
    if (small) return fetchSmall(ctx, job, source, signal, events, batch, got, budget, scope.mirrors);
    try {
      return await fetchUnderLease(ctx, job, source, signal, events, batch, got, budget, scope.mirrors);
    } catch (e) {
      // A peer judged us dead (we were stopped, starved or cut off) and took over: yield to it,
      // and wait for its commit like any other waiter, or take over in turn if it dies too.
      if (signal.aborted || !(e instanceof ModelsyncError && e.code === 'E_LEASE_LOST') || losses >= MAX_LEASE_LOSSES) throw e;
      ctx.log.warn({ uri: job.file.uri, err: e.message }, 'lost the lease on this blob; waiting for the peer that took over');
    }
  }
}

/** Download, verify and commit while holding the blob's lease; always releases it. */
async function fetchUnderLease(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents, batch: SyncBatch, lease: Lease, budget: TransferBudget, mirrors: readonly Mirror[] = []): Promise<Fetched> {
  const name = keyName(job.key);
  try {
    return await fetchVerified(ctx, job, source, signal, events, batch, {
      // Ours from before a crash, or a dead peer's: every other writer of this blob is dead or fenced off.
      paths: (version) => adoptPartial(ctx.store, name, ctx.token, version),
      signal: lease.signal,
      fence: () => lease.fence(),
      // A holder that lost its lease while paused right here must not commit: a stat then a
      // rename, because its successor may adopt the partial up to the moment its name is gone.
      how: 'rename',
      beforeCommit: async () => {
        if (!(await lease.check())) throw lease.signal.reason;
      },
      afterCommit: (paths) => rm(paths.journal, { force: true }),
    }, budget, mirrors);
  } finally {
    await lease.release();
  }
}

/**
 * A small blob, fetched under a claim into a partial no one else writes or adopts (adoption is
 * for holders of a lease). Left behind by a crash, such a partial is debris for gc.
 */
async function fetchSmall(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents, batch: SyncBatch, claim: Lease, budget: TransferBudget, mirrors: readonly Mirror[] = []): Promise<Fetched> {
  try {
    return await fetchAlone(ctx, job, source, signal, events, batch, budget, mirrors);
  } finally {
    await claim.release();
  }
}

/**
 * Into a partial of our own, committed without replacing: a small blob under its claim, or a
 * blob whose key is learnt from its bytes (nothing to lease yet: peers asking for the same URL
 * at once each fetch it, and the first commit wins).
 */
async function fetchAlone(ctx: SyncContext, job: BlobJob, source: Source, signal: AbortSignal, events: SyncEvents, batch: SyncBatch, budget: TransferBudget, mirrors: readonly Mirror[] = []): Promise<Fetched> {
  const final = blobPath(ctx.store, job.key);
  for (let tries = 1; ; tries++) {
    const paths = partPaths(ctx.store, keyName(job.key), `${ctx.token}-${++writerSeq}`);
    try {
      return await fetchVerified(ctx, job, source, signal, events, batch, {
        paths: () => Promise.resolve(paths),
        how: 'link',
        // Adoption goes by journals, and this partial never has one: as it becomes (for an
        // instant) a second name of the committed blob, it can never be adopted, not even by an
        // older modelsync that leased (and adopted partials of) every blob.
        fresh: true,
        beforeCommit: () => Promise.resolve(),
        afterCommit: () => Promise.resolve(),
      }, budget, mirrors);
    } catch (e) {
      await removePart(paths);
      // The partial was cleared under us (by such an older peer, which removes partials without a
      // journal): the blob may be in by now; else again.
      if (signal.aborted || !(e instanceof ModelsyncError && e.code === 'E_LEASE_LOST') || tries >= 3) throw e;
      const have = job.learn ? undefined : await usableBlob(ctx, job, final, batch);
      if (have) return { fetched: 0, mirrored: 0, via: 'volume', stamp: have, key: job.key };
    }
  }
}
