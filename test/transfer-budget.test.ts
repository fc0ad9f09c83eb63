/**
 * TransferBudget, the bytes and the time one entry may spend (issue 13, classes 7 and 8), on the
 * real clock with wide margins: a deadline counts only the time the entry holds a connection.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { ModelsyncError } from '../src/errors.js';
import { TransferBudget, type TransferLimits } from '../src/transfer/transfer-budget.js';

const limits = (over: Partial<TransferLimits> = {}): TransferLimits => ({ fetchRatio: 3, minRate: 4096, windowMs: 60_000, maxUnsized: 2 ** 34, ...over });

function code(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return e instanceof ModelsyncError ? e.code : 'not a ModelsyncError';
  }
}

describe('TransferBudget', () => {
  it('lets an entry fetch its size times the ratio, and not a byte more', () => {
    const b = new TransferBudget('https://x.invalid/f', 1000, limits({ fetchRatio: 1.5 }));
    expect(code(() => b.charge(1500, 'x.invalid'))).toBeUndefined();
    expect(code(() => b.charge(1, 'x.invalid'))).toBe('E_FETCH_BUDGET');
  });

  it('has no byte limit until a size is known, then the one of that size', () => {
    const b = new TransferBudget('https://x.invalid/f', undefined, limits());
    expect(code(() => b.charge(10_000, 'x.invalid'))).toBeUndefined();
    b.sized(4000);
    expect(b.maxBytes).toBe(12_000);
    expect(code(() => b.charge(2001, 'x.invalid'))).toBe('E_FETCH_BUDGET');
  });

  it('a deadline past what setTimeout can hold (a 1 TiB entry at 4 KiB/s: 8.5 years) does not fire at once', async () => {
    const b = new TransferBudget('https://x.invalid/f', 2 ** 40, limits());
    await b.track(() => sleep(50));
    expect(b.signal.aborted).toBe(false);
  });

  it('the deadline fires once the transfer time is up, with E_TOO_SLOW naming the last host', async () => {
    // One window of 10 ms plus 100 bytes at 1000 B/s: 110 ms.
    const b = new TransferBudget('https://x.invalid/f', 100, limits({ minRate: 1000, windowMs: 10 }));
    b.charge(1, 'https://cdn.invalid');
    await b.track(() => sleep(1000, undefined, { signal: b.signal }).catch(() => undefined));
    expect(b.signal.aborted).toBe(true);
    const reason: unknown = b.signal.reason;
    expect(reason instanceof ModelsyncError && reason.code).toBe('E_TOO_SLOW');
    expect(String(reason)).toMatch(/last from https:\/\/cdn\.invalid/);
  });

  it('time outside track (waiting for a connection, or for a peer) is not counted', async () => {
    // A deadline of 10 ms + 1000 ms; 300 ms tracked, 1500 ms not, 300 ms tracked.
    const b = new TransferBudget('https://x.invalid/f', 1000, limits({ minRate: 1000, windowMs: 10 }));
    await b.track(() => sleep(300));
    await sleep(1500);
    await b.track(() => sleep(300));
    expect(b.signal.aborted).toBe(false);
  });

  it('a minimum rate of 0 sets no deadline', () => {
    expect(new TransferBudget('https://x.invalid/f', 100, limits({ minRate: 0 })).maxMs).toBeUndefined();
  });
});
