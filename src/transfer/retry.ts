import { systemClock, type Clock } from '../clock.js';
import { ModelsyncError } from '../errors.js';

/** Retry policy as data: which failures, how many times, how long to wait. */
export interface RetryPolicy {
  /** Consecutive attempts without progress before giving up. */
  readonly attempts: number;
  readonly baseMs: number;
  /** Cap on any single wait; a Retry-After longer than this fails at once instead of hanging. */
  readonly maxWaitMs: number;
}

export interface AttemptContext {
  readonly attempt: number;
  /** Call when the attempt kept bytes (see isProgress): the next failure starts counting from zero again. */
  madeProgress(): void;
}

/** Bytes an attempt must keep (or all that was left to fetch) to count as progress. */
export const PROGRESS_BYTES = 4096;

/**
 * Progress is bytes kept, not bytes seen: bytes a retry throws away (a stream that starts over)
 * never count, and an attempt that kept a few bytes of much more does not either, or a server
 * that cuts every answer after a byte would reset the attempt counter for as many bytes as
 * the file has.
 */
export function isProgress(kept: number, left: number): boolean {
  return kept > 0 && kept >= Math.min(PROGRESS_BYTES, left);
}

export interface RetryOptions {
  readonly signal?: AbortSignal | undefined;
  readonly clock?: Clock;
  readonly onRetry?: (err: ModelsyncError, waitMs: number, attempt: number) => void;
}

/** Exponential backoff with jitter: base * 2^(n-1), scaled by a random factor in [0.5, 1). */
export function backoffMs(policy: RetryPolicy, attempt: number, random: number): number {
  const exp = policy.baseMs * 2 ** Math.max(0, attempt - 1);
  return Math.min(policy.maxWaitMs, Math.round(exp * (0.5 + random / 2)));
}

export function isRetryable(e: unknown): e is ModelsyncError {
  return e instanceof ModelsyncError && e.retryable;
}

export async function withRetry<T>(fn: (ctx: AttemptContext) => Promise<T>, policy: RetryPolicy, opts: RetryOptions = {}): Promise<T> {
  const clock = opts.clock ?? systemClock;
  let failures = 0;
  for (let attempt = 1; ; attempt++) {
    let progressed = false;
    try {
      return await fn({ attempt, madeProgress: () => (progressed = true) });
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      if (!isRetryable(e)) throw e;
      failures = progressed ? 1 : failures + 1;
      if (e.retryAfterMs !== undefined && e.retryAfterMs > policy.maxWaitMs) {
        throw new ModelsyncError(e.code, `${e.message}; the server asked to wait ${Math.round(e.retryAfterMs / 1000)} s, more than the ${Math.round(policy.maxWaitMs / 1000)} s cap`, {
          ...(e.url === undefined ? {} : { url: e.url }),
          ...(e.status === undefined ? {} : { status: e.status }),
          cause: e,
        });
      }
      if (failures >= policy.attempts) {
        throw new ModelsyncError(e.code, `${e.message} (gave up after ${failures} attempts)`, {
          ...(e.url === undefined ? {} : { url: e.url }),
          ...(e.status === undefined ? {} : { status: e.status }),
          cause: e,
        });
      }
      const wait = e.retryAfterMs ?? backoffMs(policy, failures, clock.random());
      opts.onRetry?.(e, wait, failures);
      await clock.sleep(wait, opts.signal);
    }
  }
}
