/** The fewest connections a host starts with: what aria2c and most tools use. */
export const START_CONNECTIONS = 16;

/**
 * A host's first level: half the connection budget (--connections), at least START_CONNECTIONS.
 * A level is judged only when a wave of its requests ends (~170 ms for 4 MiB at a CDN's 25 MB/s
 * per connection), so growth from 16 came too late for a file of a few hundred MB: the paced
 * 200 MB case went 1.07x -> 1.21x aria2c with 32 (docs/performance.md). Half, not all: a budget
 * that the operator lowered (case 7's 32) keeps its receive memory, and the rule's steps up and
 * back stay within it.
 */
export function startLevel(budget: number): number {
  return Math.max(START_CONNECTIONS, Math.floor(budget / 2));
}
/** Growth per step: half as many again (16, 24, 36, 54, ...). */
const GROWTH = 0.5;
/**
 * A step is kept when aggregate throughput grew by at least this share of the connections
 * added: 50 % more connections must bring 25 % more bytes per second. A link that is full
 * (loopback, a saturated NIC, a CDN's per-client cap) gives nearly nothing; a CDN that caps each
 * connection gives nearly all of it.
 */
const MIN_GAIN = 0.5;
/** After a plateau, probe again this much later: other transfers end, links change. */
const REPROBE_MS = 30_000;
/** After a 429 or 503, no growth for this long. */
const THROTTLE_HOLD_MS = 30_000;
/**
 * A request that started before the host was full counts as if it started full when the host
 * filled up within this share of the request's life: a level's first wave opens its connections
 * one by one (only the last one starts with every slot taken), and had to wait for the second
 * wave to be judged, ~340 ms at 25 MB/s on 4 MiB chunks, most of a 200 MB download.
 */
const FILLED_WITHIN = 0.1;

/** Why a host's limit changed: a step up, a step taken back, or a server asking us to slow down. */
export type LimitChange = 'grew' | 'plateau' | 'throttled';

/** One request to the host, from the moment it got its connection slot. */
export interface Ticket {
  readonly epoch: number;
  readonly at: number;
  /** The host was at its limit when the request started: its rate says what the limit gives. */
  readonly saturated: boolean;
}

/**
 * How many connections one host gets at once. It starts at `start` (startLevel; or the ceiling,
 * if lower) and grows by half while the host's aggregate throughput grows with it, measured
 * per level from the requests that ran at that level while the host was busy on all of its
 * connections (so a level is judged by what it delivered, time-to-first-byte included); a step
 * that does not pay is taken back. A 429 or 503 halves it, once per level: the answers to the
 * requests already in flight when it shrank say nothing about the new level. Never above
 * `ceiling`, never below 1.
 *
 * Pure bookkeeping over an injected clock: the budget (budget.ts) reports requests starting and
 * ending, and this decides.
 */
export class HostLimit {
  private current: number;
  private epoch = 0;
  private bytes = 0;
  private busyMs = 0;
  private samples = 0;
  /** Throughput at the last level kept, bytes per ms. */
  private base: { readonly limit: number; readonly rate: number } | undefined;
  private holdUntil = -Infinity;
  /** When this level last had every slot taken and has had work for all of them since. */
  private fullSince: number | undefined;

  constructor(
    readonly ceiling: number,
    private readonly now: () => number,
    private readonly changed: (limit: number, was: number, why: LimitChange) => void = () => undefined,
    start = START_CONNECTIONS,
  ) {
    this.current = Math.max(1, Math.min(ceiling, start));
  }

  get limit(): number {
    return this.current;
  }

  /** A request got a slot; `saturated`: every slot of the host is now taken. */
  started(saturated: boolean): Ticket {
    const at = this.now();
    if (saturated) this.fullSince ??= at;
    return { epoch: this.epoch, at, saturated };
  }

  /**
   * A request ended with `bytes` of body received. `stillBusy`: the host still had work waiting
   * or every slot taken, so the slot this request held did not sit idle.
   */
  ended(t: Ticket, bytes: number, stillBusy: boolean): void {
    if (!stillBusy) this.fullSince = undefined;
    if (t.epoch !== this.epoch) return;
    const now = this.now();
    const full = t.saturated || (this.fullSince !== undefined && this.fullSince - t.at <= FILLED_WITHIN * (now - t.at));
    if (!full || !stillBusy || bytes <= 0) return;
    this.bytes += bytes;
    this.busyMs += Math.max(1, now - t.at);
    this.samples++;
    if (this.samples >= Math.max(3, Math.ceil(this.current / 2))) this.judge();
  }

  /** A 429 or 503: halve, unless this request started before the last change (it was already counted). */
  throttled(t: Ticket): void {
    if (t.epoch !== this.epoch) return;
    this.holdUntil = this.now() + THROTTLE_HOLD_MS;
    this.base = undefined;
    this.set(Math.max(1, Math.floor(this.current / 2)), 'throttled');
  }

  private judge(): void {
    // Slots were all busy: the level's throughput is its connections times what each delivered.
    const rate = (this.current * this.bytes) / this.busyMs;
    const now = this.now();
    if (now < this.holdUntil) return this.set(this.current);
    const base = this.base;
    if (base !== undefined && this.current > base.limit && rate < base.rate * (1 + MIN_GAIN * (this.current / base.limit - 1))) {
      // The step did not pay: back to the level that did, and leave it alone for a while.
      this.base = undefined;
      this.holdUntil = now + REPROBE_MS;
      return this.set(base.limit, 'plateau');
    }
    this.base = { limit: this.current, rate };
    this.set(Math.min(this.ceiling, this.current + Math.max(1, Math.ceil(this.current * GROWTH))), 'grew');
  }

  /** A new level (or the same one, measured afresh): requests started before it no longer count. */
  private set(limit: number, why?: LimitChange): void {
    if (why !== undefined && limit !== this.current) this.changed(limit, this.current, why);
    this.current = limit;
    this.epoch++;
    this.bytes = this.busyMs = this.samples = 0;
    this.fullSince = undefined;
  }
}
