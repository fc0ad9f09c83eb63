import { ModelsyncError } from '../errors.js';
import { HostLimit, startLevel, type LimitChange } from './host-limit.js';
import { IdlePool } from './idle-pool.js';
import { receiveBlockSize } from './receive-buffers.js';

/** What a request task reports back to its host's limit while it runs. */
export interface Slot {
  /** Body bytes received (for the host's throughput). */
  bytes(n: number): void;
}

export interface RequestOptions {
  /** The host the request goes to (see Source.host): its connections adapt on their own. */
  readonly host: string;
  /** Lower runs first among waiting requests (the order downloads started in); then first come. */
  readonly priority?: number;
  readonly signal?: AbortSignal | undefined;
}

interface Waiting {
  readonly host: Host;
  readonly priority: number;
  readonly start: () => void;
}

interface Host {
  readonly limit: HostLimit;
  active: number;
  waiting: number;
}

export interface BudgetOptions {
  /** The most connections one host may grow to (--host-connections); `connections` caps it. */
  readonly hostCeiling?: number;
  /** Monotonic milliseconds, for the hosts' throughput (the sync context's clock). */
  readonly now?: () => number;
  /** A host's connection count changed (for the log). */
  readonly onHostLimit?: (host: string, connections: number, was: number, why: LimitChange) => void;
}

/**
 * The connection budget (--connections), and everything sized from it, in one place: how many
 * ranged requests run at once across all files and hosts (the hard cap), how many each host
 * gets (HostLimit: adaptive, up to --host-connections), the kept-alive connections they reuse,
 * each connection's receive memory, and the concurrency of the stages around them. One per
 * SyncContext: a CLI run makes one for its sync; the daemon's syncs share theirs, so
 * --connections caps the process, not each sync.
 */
export class ConnectionBudget {
  /** Connections open at once, across every file and host: the hard cap. */
  readonly connections: number;
  /** The most any one host may grow to. */
  readonly hostCeiling: number;
  /** Kept-alive connections, by route, shared by every request of this budget. */
  readonly idle: IdlePool;
  private readonly hosts = new Map<string, Host>();
  private readonly queue: Waiting[] = [];
  private active = 0;
  private seq = 0;
  private open = 0;
  private readonly now: () => number;
  private readonly onHostLimit: NonNullable<BudgetOptions['onHostLimit']>;

  constructor(connections: number, opts: BudgetOptions = {}) {
    this.connections = Math.max(1, Math.floor(connections));
    this.hostCeiling = Math.max(1, Math.min(this.connections, Math.floor(opts.hostCeiling ?? this.connections)));
    this.idle = new IdlePool(this.connections);
    this.now = opts.now ?? (() => performance.now());
    this.onHostLimit = opts.onHostLimit ?? (() => undefined);
  }

  /**
   * Bytes per receive block for the next connection opened (two per connection). Sized by the
   * connections open now, not the cap: a budget that may grow to 64 connections but runs 16
   * gives each the largest blocks (the least CPU per byte), and the ones added later get
   * smaller ones (receive-buffers.ts).
   */
  get receiveBlockSize(): number {
    return receiveBlockSize(this.open + 1);
  }

  /** A connection of this budget opened or closed (wire.ts): what receiveBlockSize is sized by. */
  opened(): void {
    this.open++;
  }

  closed(): void {
    this.open = Math.max(0, this.open - 1);
  }

  /** Connections of this budget open now, idle ones included. */
  get openConnections(): number {
    return this.open;
  }

  /** How many requests `host` may run at once now. */
  hostLimit(host: string): number {
    return this.host(host).limit.limit;
  }

  /**
   * Run one request (a ranged GET and its body) once a connection of the budget, and one of its
   * host's, is free. A 429 or 503 it fails with shrinks the host's limit.
   */
  request<T>(task: (slot: Slot) => Promise<T>, opts: RequestOptions): Promise<T> {
    const host = this.host(opts.host);
    const signal = opts.signal;
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const start = (): void => {
        signal?.removeEventListener('abort', onAbort);
        this.active++;
        host.active++;
        const ticket = host.limit.started(host.active >= host.limit.limit);
        let bytes = 0;
        const slot: Slot = { bytes: (n) => void (bytes += n) };
        const end = (e: unknown): void => {
          this.active--;
          host.active--;
          if (throttledBy(e)) host.limit.throttled(ticket);
          else host.limit.ended(ticket, bytes, host.waiting > 0 || host.active + 1 >= host.limit.limit);
          this.pump();
        };
        task(slot).then(
          (v) => {
            end(undefined);
            resolve(v);
          },
          (e: unknown) => {
            end(e);
            reject(e);
          },
        );
      };
      const seq = this.seq++;
      const entry: Waiting = { host, priority: opts.priority ?? seq, start };
      const onAbort = (): void => {
        const i = this.queue.indexOf(entry);
        if (i < 0) return;
        this.queue.splice(i, 1);
        host.waiting--;
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      host.waiting++;
      this.insert(entry);
      this.pump();
    });
  }

  /** A priority for requests of a download starting now: earlier downloads go first. */
  nextPriority(): number {
    return this.seq++;
  }

  /**
   * Files in flight at once: one per connection, and never fewer than 4, so that small files
   * (latency, not bandwidth) overlap even on a budget of one or two connections. Each holds a
   * file handle, a hasher and a lease, so this stays bounded too.
   */
  get files(): number {
    return Math.max(4, this.connections);
  }

  /** Repos or objects looked up at once by `modelsync lock`: a few, within the budget. */
  get lookups(): number {
    return Math.min(4, this.connections);
  }

  /**
   * Sockets for the AWS SDK's agent: the budget's ranged GETs plus headroom for the HEADs and
   * retries it makes beside them, which must not queue behind a full agent.
   */
  get sdkSockets(): number {
    return this.connections + 8;
  }

  private host(name: string): Host {
    let h = this.hosts.get(name);
    if (!h) {
      const changed = (limit: number, was: number, why: LimitChange): void => {
        this.onHostLimit(name, limit, was, why);
        // A larger limit lets waiting requests start now, not when the next one ends.
        if (limit > was) queueMicrotask(() => this.pump());
      };
      this.hosts.set(name, (h = { limit: new HostLimit(this.hostCeiling, this.now, changed, startLevel(this.connections)), active: 0, waiting: 0 }));
    }
    return h;
  }

  private insert(w: Waiting): void {
    let i = this.queue.length;
    while (i > 0 && (this.queue[i - 1]?.priority ?? 0) > w.priority) i--;
    this.queue.splice(i, 0, w);
  }

  /** Start waiting requests, in order, whose host has room, while the budget has room. */
  private pump(): void {
    for (let i = 0; i < this.queue.length && this.active < this.connections; ) {
      const w = this.queue[i] as Waiting;
      if (w.host.active >= w.host.limit.limit) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      w.host.waiting--;
      w.start();
    }
  }
}

/** A server asking us to slow down: too many requests, or overloaded. */
function throttledBy(e: unknown): boolean {
  return e instanceof ModelsyncError && (e.status === 429 || e.status === 503);
}
