import { setMaxListeners } from 'node:events';
import { ModelsyncError } from '../errors.js';
import { fmt } from '../fmt.js';

/** The slowest a transfer may be: `minRate` bytes per second over every window of `windowMs`. */
export interface RateRule {
  /** Bytes per second; 0 turns the rule off. */
  readonly minRate: number;
  readonly windowMs: number;
}

/**
 * The minimum-rate deadline of one response body (or one upload's request body: PacedBody). The idle timeout only catches a server that
 * sends nothing; one that trickles a byte a second never trips it, and would hold `run` (and
 * ComfyUI) forever. Each window of `windowMs` from the start of the body must bring at least
 * minRate x window bytes, or the request is aborted and `tripped` says why (E_TOO_SLOW, naming
 * the host). Retryable, since another connection may land elsewhere, but never progress: see
 * isTooSlow.
 */
export class RateFloor {
  private readonly ctrl = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private bytes = 0;
  private error: ModelsyncError | undefined;
  private readonly onParent: () => void;

  constructor(
    private readonly rule: RateRule,
    private readonly parent: AbortSignal,
  ) {
    setMaxListeners(0, this.ctrl.signal);
    this.onParent = () => this.ctrl.abort(parent.reason);
    if (parent.aborted) this.onParent();
    else parent.addEventListener('abort', this.onParent, { once: true });
  }

  /** The request's signal: the caller's, plus this floor's own abort. */
  get signal(): AbortSignal {
    return this.ctrl.signal;
  }

  get tripped(): ModelsyncError | undefined {
    return this.error;
  }

  /**
   * The body starts: windows are counted from now. `did` is what the host did with the bytes,
   * for the message: it `sent` a response body, it `took` an upload's.
   */
  start(host: string, did: 'sent' | 'took' = 'sent'): void {
    if (this.rule.minRate <= 0 || this.timer !== undefined || this.ctrl.signal.aborted) return;
    const need = Math.ceil((this.rule.minRate * this.rule.windowMs) / 1000);
    const every = Math.min(this.rule.windowMs, 2 ** 31 - 1);
    const tick = (): void => {
      if (this.bytes >= need) {
        this.bytes = 0;
        this.timer = setTimeout(tick, every).unref();
        return;
      }
      this.timer = undefined;
      this.error = new ModelsyncError(
        'E_TOO_SLOW',
        `${host} ${did} ${fmt(this.bytes)} in ${this.rule.windowMs / 1000} s, below the minimum rate of ${fmt(this.rule.minRate)}/s (MODELSYNC_MIN_RATE, over MODELSYNC_MIN_RATE_WINDOW)`,
        { url: host, retryable: true },
      );
      this.ctrl.abort(this.error);
    };
    // Unref'd: a body read to its end but never closed (a fetch body a library abandons) must not
    // hold the process open for a window; a live transfer keeps it alive by its own socket.
    this.timer = setTimeout(tick, every).unref();
  }

  count(n: number): void {
    this.bytes += n;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.parent.removeEventListener('abort', this.onParent);
  }
}

/** A cut by the rate floor kept bytes, but too few for their time: never a reason to try on and on. */
export function isTooSlow(e: unknown): boolean {
  return e instanceof ModelsyncError && e.code === 'E_TOO_SLOW';
}
