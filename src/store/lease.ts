import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { systemClock, type Clock } from '../clock.js';
import { ModelsyncError, errnoCode } from '../errors.js';
import { writeJsonAtomic } from '../fs/atomic-write.js';
import { entryIn, inDir } from '../fs/held-dir.js';
import type { ClaimOwner } from './claim.js';
import { HERE, contentOf, holderDiedHere, readOwner, type Owner } from './lease-owner.js';

export interface LeaseOptions {
  /** STORE/leases */
  readonly dir: string;
  /** One lease per blob: its key name. */
  readonly name: string;
  readonly token: string;
  readonly staleMs: number;
  readonly heartbeatMs: number;
  readonly clock?: Clock;
  /**
   * Take a claim rather than a lease: for small blobs, whose partials nobody adopts. It keeps what
   * makes peers wait (a name at the lease's path whose content says who holds it, judged stale
   * the same way, taken over at once when its holder died on this machine) and drops what only
   * protects a partial another node may adopt: no heartbeat, no fence, no owner re-read before
   * the commit. A claim judged stale while its holder still fetches costs a second download of a
   * small file, never data: each writer has its own partial and commits without replacing.
   * Two or three file operations (a link, then an lstat and an unlink) instead of about 25.
   */
  readonly claim?: ClaimOwner | undefined;
  /**
   * How long a waiter lets one live holder keep the lease before taking it over anyway: a
   * holder that heartbeats but never commits (a loop that does not end, in an older modelsync
   * or a hung download) must not stall every peer forever. Undefined: no limit.
   */
  readonly patienceMs?: number | undefined;
}

/**
 * A lease on a blob download, held on the shared volume. It only saves bandwidth: correctness
 * comes from unique partials, hashing and rename, so a lease that two nodes briefly both believe
 * they hold wastes bytes, never corrupts. Created with mkdir (atomic on NFS, unlike flock), kept
 * alive by rewriting its content, and judged stale by observers on their own monotonic clock
 * because clocks on different nodes disagree: the owner file carries no time that anyone trusts.
 *
 * The holder fences itself. An observer breaks the lease only after its content stayed the same
 * for `staleMs` on the observer's clock, so no one can have broken it within `staleMs` of our last
 * successful rewrite. A holder that was stopped (SIGSTOP, a VM pause, a partition) longer than
 * half of that must re-confirm before it writes another byte: `fence()` does that, and the
 * downloader calls it before every write, so a holder that wakes after a takeover never writes
 * into the partial its successor adopted.
 */
export class Lease {
  private readonly ctrl = new AbortController();
  private readonly stopBeat = new AbortController();
  private readonly clock: Clock;
  private beat = 0;
  /** Our clock when the last successful owner rewrite started. */
  private lastBeatAt = Number.NEGATIVE_INFINITY;
  private confirming: Promise<void> | undefined;
  private beating: Promise<void> = Promise.resolve();
  private stopped = false;
  /** A claim's inode: ours while the name still shows it. */
  private claimIno: bigint | undefined;

  private constructor(private readonly opts: LeaseOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Aborted when the lease is lost (E_LEASE_LOST) or released: the holder must stop writing. */
  get signal(): AbortSignal {
    return this.ctrl.signal;
  }

  private get path(): string {
    return path.join(this.opts.dir, this.opts.name);
  }

  static async tryAcquire(opts: LeaseOptions): Promise<Lease | undefined> {
    const lease = new Lease(opts);
    if (opts.claim) {
      const got = await opts.claim.claim(lease.path);
      if (!got) return undefined;
      lease.claimIno = got.ino;
      return lease;
    }
    try {
      await mkdir(lease.path);
    } catch (e) {
      if (errnoCode(e) === 'EEXIST') return undefined;
      throw e;
    }
    try {
      await lease.write();
    } catch (e) {
      // Our new, still ownerless lease was moved away by an observer that had judged the one
      // before it stale (the race breakStale describes): that observer holds it now.
      if (errnoCode(e) === 'ENOENT') return undefined;
      // An ownerless lease would stall every peer for a whole stale period.
      await rm(lease.path, { recursive: true, force: true }).catch(() => undefined);
      throw e;
    }
    lease.beating = lease.heartbeatLoop();
    return lease;
  }

  private async write(): Promise<void> {
    const beat = ++this.beat;
    const startedAt = this.clock.now();
    // `at` is for people reading the file; staleness is judged on content changes alone.
    // Through the lease folder held open: one swapped for a symlink since our mkdir gets nothing.
    const record = { token: this.opts.token, beat, host: hostname(), pid: process.pid, here: HERE, at: new Date().toISOString() };
    await inDir(this.opts.dir, [this.opts.name], (at) => writeJsonAtomic(entryIn(at, 'owner'), record));
    this.lastBeatAt = Math.max(this.lastBeatAt, startedAt);
  }

  /** Still ours? Read the owner file: a peer that took over has replaced it (or the whole lease). */
  async check(): Promise<boolean> {
    if (this.ctrl.signal.aborted) return false;
    const owner = await readOwner(this.path);
    if (owner.state === 'owned' && owner.token === this.opts.token) return true;
    this.lose(`lost the lease on ${this.opts.name} to another node; stopping`);
    return false;
  }

  /**
   * Resolve when writing is safe, reject with E_LEASE_LOST when it is not. Free while heartbeats
   * are recent; after a gap (we were stopped or starved) it re-reads and rewrites the owner first.
   */
  async fence(): Promise<void> {
    if (this.ctrl.signal.aborted) throw this.ctrl.signal.reason;
    if (this.opts.claim || this.fresh()) return;
    try {
      await this.confirm();
    } catch (e) {
      this.lose(`could not renew the lease on ${this.opts.name} (${errnoCode(e) ?? String(e)}); stopping`);
    }
    if (this.ctrl.signal.aborted) throw this.ctrl.signal.reason;
    if (!this.fresh()) {
      this.lose(`could not renew the lease on ${this.opts.name} in time; stopping`);
      throw this.ctrl.signal.reason;
    }
  }

  private fresh(): boolean {
    return this.clock.now() - this.lastBeatAt < this.opts.staleMs / 2;
  }

  /** check + rewrite, one at a time (the heartbeat and every fence share it). */
  private confirm(): Promise<void> {
    if (this.confirming) return this.confirming;
    const p = (async () => {
      if (!this.stopped && (await this.check()) && !this.stopped) await this.write();
    })();
    this.confirming = p;
    p.then(
      () => this.settled(p),
      () => this.settled(p),
    );
    return p;
  }

  private settled(p: Promise<void>): void {
    if (this.confirming === p) this.confirming = undefined;
  }

  private async heartbeatLoop(): Promise<void> {
    const every = Math.max(1, this.opts.heartbeatMs);
    while (!this.stopped && !this.ctrl.signal.aborted) {
      try {
        await this.clock.sleep(every, this.stopBeat.signal);
      } catch {
        return;
      }
      try {
        await this.confirm();
      } catch {
        // A missed beat is not fatal: peers wait a whole stale period, and fence() guards writes.
      }
    }
  }

  private lose(message: string): void {
    this.stopped = true;
    this.stopBeat.abort();
    if (!this.ctrl.signal.aborted) this.ctrl.abort(new ModelsyncError('E_LEASE_LOST', message, { retryable: false }));
  }

  async release(): Promise<void> {
    if (this.opts.claim) return this.releaseClaim();
    const held = !this.ctrl.signal.aborted;
    this.stopped = true;
    this.stopBeat.abort();
    // An owner rewrite still in flight must not land after the lease is gone (or someone else's).
    await Promise.allSettled([this.beating, this.confirming]);
    if (held && !this.ctrl.signal.aborted && (await this.check().catch(() => false))) {
      const away = `${this.path}.released-${this.opts.token}${randomBytes(3).toString('hex')}`;
      try {
        await rename(this.path, away);
        await rm(away, { recursive: true, force: true });
      } catch {
        /* already gone */
      }
    }
    if (!this.ctrl.signal.aborted) this.ctrl.abort(new ModelsyncError('E_ABORTED', 'lease released'));
  }

  private async releaseClaim(): Promise<void> {
    if (this.ctrl.signal.aborted) return;
    this.stopped = true;
    this.ctrl.abort(new ModelsyncError('E_ABORTED', 'claim released'));
    if (this.claimIno !== undefined) await this.opts.claim?.unclaim(this.path, this.claimIno);
  }
}

export function newToken(): string {
  return randomBytes(8).toString('hex');
}

/**
 * Take the lease, or wait while a live peer holds it. Returns 'done' once `isDone` says the blob
 * was committed (by the peer), or the lease once we hold it (fresh or taken over from a peer
 * whose heartbeat stopped for `staleMs` on our clock). `isDone` is asked again after winning the
 * lease: a peer may have committed and released between our last look and our mkdir.
 */
export async function acquireOrWait(opts: LeaseOptions, isDone: () => Promise<boolean>, signal: AbortSignal, onWait?: () => void, onStuck?: (holder: string) => void): Promise<Lease | 'done'> {
  const clock = opts.clock ?? systemClock;
  const leasePath = path.join(opts.dir, opts.name);
  let seen: string | undefined;
  let seenAt = clock.now();
  let holder: string | undefined;
  let holderSince = clock.now();
  let waited = false;
  // No fs.watch: change notification does not cross NFS clients. Polling four times a second
  // costs a stat, a failed mkdir and a small read, and lets a waiter publish within 250 ms of
  // the commit: on a file that downloads in seconds, a 1 s poll was a tenth of the wall time.
  const pollMs = Math.max(10, Math.min(opts.heartbeatMs, 250));
  for (;;) {
    if (signal.aborted) throw signal.reason;
    if (await isDone()) return 'done';
    const lease = await Lease.tryAcquire(opts);
    if (lease) {
      // isDone may throw (a manifest that disagrees with the blob): the lease must not outlive it.
      const done = await isDone().catch(async (e: unknown) => {
        await lease.release();
        throw e;
      });
      if (!done) return lease;
      await lease.release();
      return 'done';
    }
    if (!waited) {
      waited = true;
      onWait?.();
    }
    const owner = await readOwner(leasePath);
    const content = contentOf(owner);
    const who = owner.state === 'owned' ? owner.token : undefined;
    if (who !== holder) {
      holder = who;
      holderSince = clock.now();
    } else if (who !== undefined && opts.patienceMs !== undefined && clock.now() - holderSince >= opts.patienceMs) {
      // Alive, but holding it longer than any download of this blob may take: treated as stuck.
      // Its heartbeat keeps changing the content, so the break goes by who holds it, not by what.
      onStuck?.(who);
      await breakStale(leasePath, opts.token, (o) => o.state === 'owned' && o.token === who);
      seen = holder = undefined;
      continue;
    }
    if (holderDiedHere(owner)) {
      // A restarted container or a crashed run on this machine: no need to wait out the timeout.
      await breakStale(leasePath, opts.token, (o) => contentOf(o) === content);
      seen = undefined;
      continue;
    }
    if (content !== seen) {
      seen = content;
      seenAt = clock.now();
    } else if (clock.now() - seenAt >= opts.staleMs) {
      await breakStale(leasePath, opts.token, (o) => contentOf(o) === content);
      seen = undefined;
      continue;
    }
    await clock.sleep(pollMs, signal);
  }
}

/**
 * Move a stale lease out of the way; of several observers' renames only one can take a given
 * directory. (An observer that looked just before another's takeover can still move the new
 * lease: its holder then finds itself replaced at its next check and yields. Bytes, not data.)
 */
async function breakStale(leasePath: string, token: string, still: (o: Owner) => boolean): Promise<void> {
  if (!still(await readOwner(leasePath))) return;
  const away = `${leasePath}.stale-${token}${randomBytes(3).toString('hex')}`;
  try {
    await rename(leasePath, away);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return;
    throw e;
  }
  // The lease is out of the way once renamed: what is left is debris for gc (isLeaseLeftover).
  // A holder still writing into its moved directory makes the rm fail with ENOTEMPTY; that is
  // no reason to fail the sync that broke it.
  await rm(away, { recursive: true, force: true }).catch(() => undefined);
}

/** Names in STORE/leases that are leftovers of a break or a release, never a live lease. */
export function isLeaseLeftover(name: string): boolean {
  return /\.(stale|released)-[0-9a-f]+$/.test(name);
}
