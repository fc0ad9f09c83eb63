import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { systemClock, type Clock } from '../clock.js';
import { ModelsyncError, errnoCode } from '../errors.js';

export interface LeaseOptions {
  /** STORE/leases */
  readonly dir: string;
  /** One lease per blob: its key name. */
  readonly name: string;
  readonly token: string;
  readonly staleMs: number;
  readonly heartbeatMs: number;
  readonly clock?: Clock;
}

/**
 * A lease on a blob download, held on the shared volume. It only saves bandwidth: correctness
 * comes from unique partials, hashing and rename, so a lease that two nodes briefly both believe
 * they hold wastes bytes, never corrupts. Created with mkdir (atomic on NFS, unlike flock), kept
 * alive by rewriting its content, and judged stale by observers on their own monotonic clock
 * because clocks on different nodes disagree.
 */
export class Lease {
  private readonly ctrl = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private beat = 0;

  private constructor(private readonly opts: LeaseOptions) {}

  /** Aborted when the lease is lost: the holder must stop writing. */
  get signal(): AbortSignal {
    return this.ctrl.signal;
  }

  private get path(): string {
    return path.join(this.opts.dir, this.opts.name);
  }

  static async tryAcquire(opts: LeaseOptions): Promise<Lease | undefined> {
    const lease = new Lease(opts);
    try {
      await mkdir(lease.path);
    } catch (e) {
      if (errnoCode(e) === 'EEXIST') return undefined;
      throw e;
    }
    await lease.write();
    lease.timer = setInterval(() => void lease.heartbeat(), opts.heartbeatMs);
    lease.timer.unref();
    return lease;
  }

  private async write(): Promise<void> {
    this.beat++;
    const owner = path.join(this.path, 'owner');
    const tmp = `${owner}.${this.opts.token}`;
    await writeFile(tmp, JSON.stringify({ token: this.opts.token, beat: this.beat, host: hostname(), pid: process.pid }));
    await rename(tmp, owner);
  }

  /** Still ours? Read the owner file: a peer that took over has replaced it. */
  async check(): Promise<boolean> {
    if (this.ctrl.signal.aborted) return false;
    const owner = await readOwner(this.path);
    if (owner?.token === this.opts.token) return true;
    // mkdir happened but the first owner write may not be visible yet
    if (owner === undefined && this.beat === 0) return true;
    this.lose();
    return false;
  }

  private lose(): void {
    if (this.timer) clearInterval(this.timer);
    this.ctrl.abort(new ModelsyncError('E_LEASE_LOST', `lost the lease on ${this.opts.name} to another node; stopping`, { retryable: false }));
  }

  private async heartbeat(): Promise<void> {
    try {
      if (await this.check()) await this.write();
    } catch {
      // A missed beat is not fatal; a peer only takes over after a whole stale period.
    }
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.ctrl.signal.aborted) return;
    if (await this.check()) {
      const away = `${this.path}.released-${this.opts.token}`;
      try {
        await rename(this.path, away);
        await rm(away, { recursive: true, force: true });
      } catch {
        /* already gone */
      }
    }
    this.ctrl.abort(new ModelsyncError('E_ABORTED', 'lease released'));
  }
}

async function readOwner(leasePath: string): Promise<{ token: string; raw: string } | undefined> {
  try {
    const raw = await readFile(path.join(leasePath, 'owner'), 'utf8');
    const j = JSON.parse(raw) as { token?: unknown };
    return typeof j.token === 'string' ? { token: j.token, raw } : undefined;
  } catch {
    return undefined;
  }
}

export function newToken(): string {
  return randomBytes(8).toString('hex');
}

/**
 * Take the lease, or wait while a live peer holds it. Returns 'done' once `isDone` says the blob
 * was committed (by the peer), or the lease once we hold it (fresh or taken over from a peer
 * whose heartbeat stopped for `staleMs` on our clock).
 */
export async function acquireOrWait(opts: LeaseOptions, isDone: () => Promise<boolean>, signal: AbortSignal, onWait?: () => void): Promise<Lease | 'done'> {
  const clock = opts.clock ?? systemClock;
  const leasePath = path.join(opts.dir, opts.name);
  let seen: string | undefined;
  let seenAt = clock.now();
  let waited = false;
  const pollMs = Math.max(10, Math.min(opts.heartbeatMs, 1000));
  for (;;) {
    if (signal.aborted) throw signal.reason;
    if (await isDone()) return 'done';
    const lease = await Lease.tryAcquire(opts);
    if (lease) return lease;
    if (!waited) {
      waited = true;
      onWait?.();
    }
    const owner = await readOwner(leasePath);
    const content = owner?.raw ?? '';
    if (content !== seen) {
      seen = content;
      seenAt = clock.now();
    } else if (clock.now() - seenAt > opts.staleMs) {
      await breakStale(leasePath, opts.token, content);
      seen = undefined;
      continue;
    }
    await clock.sleep(pollMs, signal);
  }
}

/** Move a stale lease out of the way; only one of several observers' renames can succeed. */
async function breakStale(leasePath: string, token: string, staleContent: string): Promise<void> {
  const again = await readOwner(leasePath);
  if ((again?.raw ?? '') !== staleContent) return;
  const away = `${leasePath}.stale-${token}`;
  try {
    await rename(leasePath, away);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return;
    throw e;
  }
  await rm(away, { recursive: true, force: true });
}
