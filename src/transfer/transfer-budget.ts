import { ModelsyncError } from '../errors.js';
import { fmt } from '../fmt.js';

/** The limits every transfer of an entry is held to (config: MODELSYNC_FETCH_BUDGET). */
export interface TransferLimits {
  /** Bytes an entry may fetch over the network in one sync, as a multiple of its size. */
  readonly fetchRatio: number;
}

/**
 * What one entry may still spend. Every retry loop between the sync and the socket (a chunk's
 * retries, a stream that starts over, clean re-downloads after a mismatch, restarts after the
 * source changed, a lease lost to a peer and taken back) draws on the same budget, so a source
 * that keeps failing the same way costs a bounded number of bytes whatever loop it sends us
 * round: the attempt counters alone reset whenever bytes are kept, which a source that throws
 * every copy away at the end (a body one byte short, the wrong hash) turns into a loop without end.
 */
export class TransferBudget {
  private fetched = 0;

  constructor(
    private readonly uri: string,
    private size: number | undefined,
    private readonly limits: TransferLimits,
  ) {}

  /** The size became known (a server's Content-Range total, for an entry with none). */
  sized(size: number): void {
    this.size ??= size;
  }

  /** Bytes this entry may fetch in all; undefined while its size is unknown. */
  get maxBytes(): number | undefined {
    return this.size === undefined ? undefined : Math.ceil(this.size * this.limits.fetchRatio);
  }

  /** `n` more bytes came over the network from `host`; throws once the budget is spent. */
  charge(n: number, host: string): void {
    this.fetched += n;
    const max = this.maxBytes;
    if (max !== undefined && this.fetched > max) {
      throw new ModelsyncError(
        'E_FETCH_BUDGET',
        `${this.uri}: fetched more than ${fmt(max)} (${this.limits.fetchRatio}x its size of ${fmt(this.size ?? 0)}) without a verified copy; giving up on a source that keeps failing (last from ${host}; MODELSYNC_FETCH_BUDGET)`,
        { url: this.uri },
      );
    }
  }
}
