import { setMaxListeners } from 'node:events';
import { ModelsyncError } from '../errors.js';
import { fmt } from '../fmt.js';
import type { RateRule } from './rate-floor.js';

/**
 * The longest delay setTimeout keeps (2^31 - 1 ms, 24.8 days): a longer one fires after 1 ms.
 * A 20 GB entry at 4 KiB/s has 59 days: its timer is re-armed until the time is really up.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The limits every transfer of an entry is held to (config: MODELSYNC_FETCH_BUDGET, MODELSYNC_MIN_RATE). */
export interface TransferLimits extends RateRule {
  /** Bytes an entry may fetch over the network in one sync, as a multiple of its size. */
  readonly fetchRatio: number;
  /** The largest stream that no metadata gave a size (see roomForUnsized). */
  readonly maxUnsized: number;
}

/**
 * What one entry may still spend, in bytes and in time. Every retry loop between the sync and
 * the socket (a chunk's retries, a stream that starts over, clean re-downloads after a mismatch,
 * restarts after the source changed, a lease lost to a peer and taken back) draws on the same
 * budget, so a source that keeps failing the same way costs a bounded number of bytes whatever
 * loop it sends us round: the attempt counters alone reset whenever bytes are kept, which a
 * source that throws every copy away at the end (a body one byte short, the wrong hash) turns
 * into a loop without end.
 *
 * Time: once the size is known, the entry must be done within the time its bytes take at the
 * minimum rate, plus one window, counted only while it holds a connection (a slot of the pool,
 * a stream, a probe): waiting for a slot behind other files, or for a peer's lease, is not its
 * own slowness. A stream's backoff sleeps are counted (they hold its connection); a chunk's
 * are not, since its lane gives the connection back while it waits (download.ts).
 */
export class TransferBudget {
  private fetched = 0;
  private lastHost: string | undefined;
  private readonly ctrl = new AbortController();
  private active = 0;
  private since = 0;
  private used = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly uri: string,
    private size: number | undefined,
    private readonly limits: TransferLimits,
  ) {
    setMaxListeners(0, this.ctrl.signal);
  }

  get maxUnsized(): number {
    return this.limits.maxUnsized;
  }

  /** The minimum rate each of this entry's responses is held to. */
  get rate(): RateRule {
    return this.limits;
  }

  /** Aborted (with E_TOO_SLOW) once the entry's time is up. */
  get signal(): AbortSignal {
    return this.ctrl.signal;
  }

  /** The size became known (a server's Content-Range total, for an entry with none). */
  sized(size: number): void {
    if (this.size !== undefined) return;
    this.size = size;
    this.arm();
  }

  /** Bytes this entry may fetch in all; undefined while its size is unknown. */
  get maxBytes(): number | undefined {
    return this.size === undefined ? undefined : Math.ceil(this.size * this.limits.fetchRatio);
  }

  /** Transfer time this entry may use; undefined while its size is unknown (or with no minimum rate). */
  get maxMs(): number | undefined {
    if (this.size === undefined || this.limits.minRate <= 0) return undefined;
    return this.limits.windowMs + Math.ceil((this.size / this.limits.minRate) * 1000);
  }

  /** `n` more bytes came over the network from `host`; throws once the budget is spent. */
  charge(n: number, host: string): void {
    this.fetched += n;
    this.lastHost = host;
    const max = this.maxBytes;
    if (max !== undefined && this.fetched > max) {
      throw new ModelsyncError(
        'E_FETCH_BUDGET',
        `${this.uri}: fetched more than ${fmt(max)} (${this.limits.fetchRatio}x its size of ${fmt(this.size ?? 0)}) without a verified copy; giving up on a source that keeps failing (last from ${host}; MODELSYNC_FETCH_BUDGET)`,
        { url: this.uri },
      );
    }
  }

  /** Run `fn` as time this entry spends transferring (see the class comment). */
  async track<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active++ === 0) {
      this.since = performance.now();
      this.arm();
    }
    try {
      return await fn();
    } finally {
      if (--this.active === 0) {
        this.used += performance.now() - this.since;
        clearTimeout(this.timer);
        this.timer = undefined;
      }
    }
  }

  private arm(): void {
    const max = this.maxMs;
    if (max === undefined || this.active === 0 || this.ctrl.signal.aborted) return;
    clearTimeout(this.timer);
    const left = max - this.used - (performance.now() - this.since);
    if (left > MAX_TIMER_MS) {
      this.timer = setTimeout(() => this.arm(), MAX_TIMER_MS).unref();
      return;
    }
    this.timer = setTimeout(() => {
      const host = this.lastHost === undefined ? '' : ` (last from ${this.lastHost})`;
      this.ctrl.abort(
        new ModelsyncError(
          'E_TOO_SLOW',
          `${this.uri}: not done after ${Math.round(max / 1000)} s of transfer, the time ${fmt(this.size ?? 0)} take at the minimum rate of ${fmt(this.limits.minRate)}/s plus one window${host}; MODELSYNC_MIN_RATE`,
          { url: this.uri },
        ),
      );
    }, Math.max(0, left)).unref();
  }
}
