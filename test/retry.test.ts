/**
 * Retry policy as data (transfer/retry.ts) and Retry-After (transfer/http.ts), in virtual time:
 * which failures are retried, how often, how long each wait is, and what ends the retrying.
 */
import { describe, expect, it } from 'vitest';
import { ModelsyncError } from '../src/errors.js';
import { parseRetryAfter } from '../src/transfer/http.js';
import { backoffMs, withRetry, type RetryPolicy } from '../src/transfer/retry.js';
import { VirtualTime } from './support/virtual-time.js';

const POLICY: RetryPolicy = { attempts: 4, baseMs: 100, maxWaitMs: 5000 };
const flaky = (extra: { retryAfterMs?: number } = {}): ModelsyncError => new ModelsyncError('E_HTTP', 'HTTP 503', { retryable: true, status: 503, url: 'https://h.example/f', ...extra });

/** Run `fn` under withRetry on a virtual clock; returns the outcome, the calls made and each wait. */
async function run(
  fn: (attempt: number, progress: () => void) => Promise<string>,
  opts: { signal?: AbortSignal; onRetry?: () => void } = {},
): Promise<{ result: string | ModelsyncError; calls: number; waits: number[] }> {
  const time = new VirtualTime();
  let calls = 0;
  const waits: number[] = [];
  let done = false;
  const p = withRetry(
    (ctx) => {
      calls++;
      return fn(ctx.attempt, () => ctx.madeProgress());
    },
    POLICY,
    {
      clock: time.clock(),
      signal: opts.signal,
      onRetry: (_e, w) => {
        waits.push(w);
        opts.onRetry?.();
      },
    },
  ).then(
    (v) => v,
    (e: unknown) => (e instanceof ModelsyncError ? e : Promise.reject(e)),
  );
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await time.advanceUntil(() => done, 120_000, 50);
  return { result: await p, calls, waits };
}

describe('withRetry', () => {
  it('fails N times then succeeds: N + 1 calls, backoff doubling from the base with jitter', async () => {
    const r = await run(async (attempt) => {
      if (attempt <= 3) throw flaky();
      return 'ok';
    });
    expect(r).toMatchObject({ result: 'ok', calls: 4 });
    // The virtual clock's random() is 0.5: each wait is 3/4 of base * 2^(n-1).
    expect(r.waits).toEqual([75, 150, 300]);
  });

  it('gives up after `attempts` failures without progress, keeping the code and the status', async () => {
    const r = await run(async () => {
      throw flaky();
    });
    expect(r.calls).toBe(POLICY.attempts);
    expect(r.result).toMatchObject({ code: 'E_HTTP', status: 503, url: 'https://h.example/f' });
    expect((r.result as ModelsyncError).cause).toBeInstanceOf(ModelsyncError);
  });

  it('progress resets the count: a download that keeps moving is never given up on', async () => {
    const r = await run(async (attempt, progress) => {
      if (attempt < 10) {
        progress();
        throw flaky();
      }
      return 'ok';
    });
    expect(r).toMatchObject({ result: 'ok', calls: 10 });
    expect(new Set(r.waits)).toEqual(new Set([75]));
  });

  it('a failure that is not retryable (or not ours) is thrown at once', async () => {
    const r = await run(async () => {
      throw new ModelsyncError('E_AUTH', 'HTTP 401', { status: 401 });
    });
    expect(r).toMatchObject({ calls: 1, result: { code: 'E_AUTH' } });
    await expect(run(async () => Promise.reject(new TypeError('a bug')))).rejects.toBeInstanceOf(TypeError);
  });

  it("honours the server's Retry-After, and fails at once when it asks for more than the cap", async () => {
    const honoured = await run(async (attempt) => {
      if (attempt === 1) throw flaky({ retryAfterMs: 2000 });
      return 'ok';
    });
    expect(honoured).toMatchObject({ result: 'ok', calls: 2, waits: [2000] });
    const capped = await run(async () => {
      throw flaky({ retryAfterMs: 60_000 });
    });
    expect(capped).toMatchObject({ calls: 1, waits: [], result: { code: 'E_HTTP', status: 503 } });
  });

  it('an abort ends the retrying: during a wait with its reason, before one with the failure itself', async () => {
    const during = new AbortController();
    const r = await run(
      async () => {
        throw flaky();
      },
      { signal: during.signal, onRetry: () => during.abort(new ModelsyncError('E_ABORTED', 'stop')) },
    );
    expect(r).toMatchObject({ calls: 1, result: { code: 'E_ABORTED' } });
    const before = new AbortController();
    const s = await run(
      async () => {
        before.abort(new ModelsyncError('E_ABORTED', 'stop'));
        throw flaky();
      },
      { signal: before.signal },
    );
    expect(s).toMatchObject({ calls: 1, waits: [], result: { code: 'E_HTTP' } });
  });

  it('backoff never waits longer than the cap', () => {
    expect(backoffMs(POLICY, 1, 0)).toBe(50);
    expect(backoffMs(POLICY, 1, 0.999)).toBe(100);
    expect(backoffMs(POLICY, 20, 0.5)).toBe(5000);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-12-04T00:00:00Z');
  it('reads delay-seconds and HTTP dates; a date in the past is no wait', () => {
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter('1.5', now)).toBe(1500);
    expect(parseRetryAfter('Fri, 04 Dec 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Thu, 03 Dec 2026 23:00:00 GMT', now)).toBe(0);
  });

  it('ignores what it cannot read (no wait from garbage): absent, empty, negative, exponents, bare numbers read as dates', () => {
    for (const v of [undefined, '', ' ', '-5', '1e3', '0x10', 'Infinity', 'soon', '5 minutes', '2026-12-04']) expect(parseRetryAfter(v, now), String(v)).toBeUndefined();
  });
});
