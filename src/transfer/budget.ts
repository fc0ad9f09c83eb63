import PQueue from 'p-queue';
import { IdlePool } from './idle-pool.js';
import { receiveBlockSize } from './receive-buffers.js';

/**
 * The connection budget (--connections), and everything sized from it, in one place: how many
 * ranged requests run at once across all files, the kept-alive connections they reuse, each
 * connection's receive memory, and the concurrency of the stages around them. One per
 * SyncContext: a CLI run makes one for its sync; the daemon's syncs share theirs, so
 * --connections caps the process, not each sync.
 *
 * This is where per-host policy belongs (issue 15): a connection count per host that grows
 * while throughput grows and shrinks on 429/503, never past `connections`; connections opened
 * ahead while Hub lookups run, for the idle pool to hand out.
 */
export class ConnectionBudget {
  /** Connections open at once, across every file and host: the hard cap. */
  readonly connections: number;
  /** Kept-alive connections, by route, shared by every request of this budget. */
  readonly idle: IdlePool;
  /** Bytes per receive block; each connection has two (receive-buffers.ts). */
  readonly receiveBlockSize: number;
  private readonly slots: PQueue;

  constructor(connections: number) {
    this.connections = Math.max(1, Math.floor(connections));
    this.slots = new PQueue({ concurrency: this.connections });
    this.idle = new IdlePool(this.connections);
    this.receiveBlockSize = receiveBlockSize(this.connections);
  }

  /** Run one request (a ranged GET and its body) once a connection of the budget is free. */
  request(task: () => Promise<void>, signal?: AbortSignal): Promise<void> {
    return this.slots.add(task, signal === undefined ? {} : { signal });
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
}
