/**
 * The adaptive per-host connection count (transfer/host-limit.ts) in virtual time, and the
 * budget that schedules requests by it (transfer/budget.ts). No real time anywhere: each
 * simulated request advances a counter by the time its bytes would take on a modelled link.
 */
import { describe, expect, it } from 'vitest';
import { ModelsyncError } from '../src/errors.js';
import { ConnectionBudget } from '../src/transfer/budget.js';
import { HostLimit, START_CONNECTIONS, startLevel, type LimitChange } from '../src/transfer/host-limit.js';

const MB = 1e6;

/** A host: `perConnection` bytes/ms for each connection, `link` bytes/ms for all of them together. */
interface Link {
  readonly perConnection: number;
  readonly link: number;
  /** Milliseconds before each request's first byte. */
  readonly ttfbMs?: number;
}

/**
 * Run `rounds` waves of requests against the model, every slot busy (a long download): each wave
 * is `limit` requests of `bytes`, each taking what its share of the link allows.
 */
function simulate(limit: HostLimit, link: Link, rounds: number, clock: { t: number }, bytes = 4 * MB): number[] {
  const seen: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const n = limit.limit;
    seen.push(n);
    const rate = Math.min(link.perConnection, link.link / n);
    const tickets = Array.from({ length: n }, () => limit.started(true));
    clock.t += (link.ttfbMs ?? 0) + bytes / rate;
    for (const t of tickets) limit.ended(t, bytes, true);
  }
  return seen;
}

function recorder(): { changes: { limit: number; was: number; why: LimitChange }[]; fn: (limit: number, was: number, why: LimitChange) => void } {
  const changes: { limit: number; was: number; why: LimitChange }[] = [];
  return { changes, fn: (limit, was, why) => void changes.push({ limit, was, why }) };
}

describe('HostLimit', () => {
  it('grows by half while every connection is capped on its own, and stops at the ceiling', () => {
    const clock = { t: 0 };
    const rec = recorder();
    const limit = new HostLimit(64, () => clock.t, rec.fn);
    // 25 MB/s per connection, a 10 GB/s link: every added connection adds its 25 MB/s.
    const seen = simulate(limit, { perConnection: 25 * MB / 1000, link: 10_000 * MB / 1000, ttfbMs: 30 }, 20, clock);
    expect(seen[0]).toBe(START_CONNECTIONS);
    expect(Math.max(...seen)).toBe(64);
    expect(seen.every((n) => n <= 64)).toBe(true);
    expect(rec.changes.map((c) => c.limit)).toEqual([24, 36, 54, 64]);
    expect(rec.changes.every((c) => c.why === 'grew')).toBe(true);
  });

  it('never exceeds a ceiling below the start (the --connections cap), and never grows past it', () => {
    const clock = { t: 0 };
    const limit = new HostLimit(6, () => clock.t);
    expect(limit.limit).toBe(6);
    const seen = simulate(limit, { perConnection: 25 * MB / 1000, link: 10_000 * MB / 1000 }, 30, clock);
    expect(seen.every((n) => n === 6)).toBe(true);
  });

  it('a step that brings no throughput is taken back, and not tried again for a while', () => {
    const clock = { t: 0 };
    const rec = recorder();
    const limit = new HostLimit(64, () => clock.t, rec.fn);
    // The link is full at 16 connections: more only share it.
    const seen = simulate(limit, { perConnection: 25 * MB / 1000, link: 400 * MB / 1000 }, 10, clock);
    expect(rec.changes.slice(0, 2)).toEqual([
      { limit: 24, was: 16, why: 'grew' },
      { limit: 16, was: 24, why: 'plateau' },
    ]);
    // Ten rounds of 160 ms or so: well inside the pause before the next probe.
    expect(seen.slice(3).every((n) => n === 16)).toBe(true);
  });

  it('a link that fills part-way up keeps the last step that paid', () => {
    const clock = { t: 0 };
    const limit = new HostLimit(64, () => clock.t);
    // 25 MB/s each up to 1 GB/s in all: 36 connections give 900 MB/s, 54 would give 1000 (11 % more for 50 % more).
    const seen = simulate(limit, { perConnection: 25 * MB / 1000, link: 1000 * MB / 1000 }, 40, clock);
    expect(Math.max(...seen)).toBe(54);
    expect(seen.at(-1)).toBe(36);
  });

  it('a 429 or 503 halves it once for the requests of one level, and holds it there', () => {
    const clock = { t: 0 };
    const rec = recorder();
    const limit = new HostLimit(64, () => clock.t, rec.fn);
    const inFlight = Array.from({ length: 16 }, () => limit.started(true));
    // Every request of the level is refused at once: that is one signal, not sixteen.
    for (const t of inFlight) limit.throttled(t);
    expect(limit.limit).toBe(8);
    expect(rec.changes).toEqual([{ limit: 8, was: 16, why: 'throttled' }]);
    // A request of the new level refused too: halved again.
    limit.throttled(limit.started(true));
    expect(limit.limit).toBe(4);
    // Per-connection-capped again, but held: no growth right after being told to slow down.
    const seen = simulate(limit, { perConnection: 25 * MB / 1000, link: 10_000 * MB / 1000 }, 20, clock, 0.1 * MB);
    expect(seen.every((n) => n === 4)).toBe(true);
    // Later it probes again.
    clock.t += 60_000;
    simulate(limit, { perConnection: 25 * MB / 1000, link: 10_000 * MB / 1000 }, 4, clock);
    expect(limit.limit).toBeGreaterThan(4);
  });

  it('never below one connection', () => {
    const clock = { t: 0 };
    const limit = new HostLimit(64, () => clock.t);
    for (let i = 0; i < 10; i++) limit.throttled(limit.started(true));
    expect(limit.limit).toBe(1);
  });

  it('judges only requests that ran while the host had work for all its connections', () => {
    const clock = { t: 0 };
    const limit = new HostLimit(64, () => clock.t);
    for (let i = 0; i < 100; i++) {
      const t = limit.started(false);
      clock.t += 10;
      limit.ended(t, 4 * MB, true);
    }
    expect(limit.limit).toBe(START_CONNECTIONS);
  });
});

describe('startLevel', () => {
  it('is half the connection budget, never below START_CONNECTIONS; a budget below that caps it through the ceiling', () => {
    expect(startLevel(64)).toBe(32);
    expect(startLevel(100)).toBe(50);
    expect(startLevel(32)).toBe(START_CONNECTIONS);
    expect(startLevel(4)).toBe(START_CONNECTIONS);
    const b = new ConnectionBudget(64, { hostCeiling: 20 });
    expect(b.hostLimit('cdn')).toBe(20);
    expect(new ConnectionBudget(6).hostLimit('cdn')).toBe(6);
    expect(new ConnectionBudget(64).hostLimit('cdn')).toBe(32);
  });
});

describe('HostLimit: the first wave', () => {
  /** `n` requests opened 1 ms apart (only the last finds every slot taken), all ending `ms` later. */
  function wave(limit: HostLimit, clock: { t: number }, n: number, ms: number, fillAt?: number): void {
    const tickets = [];
    for (let i = 0; i < n; i++) {
      if (fillAt !== undefined && i === n - 1) clock.t = fillAt;
      tickets.push(limit.started(i === n - 1));
      clock.t += 1;
    }
    clock.t += ms;
    for (const t of tickets) limit.ended(t, 4 * MB, true);
  }

  it('a level whose connections open one by one is judged at the end of its first wave', () => {
    const clock = { t: 0 };
    const rec = recorder();
    const limit = new HostLimit(64, () => clock.t, rec.fn);
    // 4 MiB at 25 MB/s: 168 ms. Before, only the 16th request counted, and the step waited for the second wave.
    wave(limit, clock, START_CONNECTIONS, 168);
    expect(rec.changes).toEqual([{ limit: 24, was: 16, why: 'grew' }]);
  });

  it('requests that ran long before the host filled up are not taken for a full level', () => {
    const clock = { t: 0 };
    const limit = new HostLimit(64, () => clock.t);
    // The host filled only 100 ms into requests of 170 ms: their rate is not the full level's.
    wave(limit, clock, START_CONNECTIONS, 69, 100);
    expect(limit.limit).toBe(START_CONNECTIONS);
  });

  it('a host that ran out of work is not full any more: later requests are judged afresh', () => {
    const clock = { t: 0 };
    const limit = new HostLimit(64, () => clock.t);
    limit.started(true);
    // Nothing waiting and a slot free: the level is not full from then on.
    limit.ended(limit.started(false), 4 * MB, false);
    const late = Array.from({ length: 15 }, () => limit.started(false));
    clock.t += 168;
    for (const t of late) limit.ended(t, 4 * MB, true);
    expect(limit.limit).toBe(START_CONNECTIONS);
  });
});

describe('ConnectionBudget with hosts', () => {
  /** A task that runs until released, counting how many run at once per host and in all. */
  function gated(): { run: (host: string) => () => Promise<void>; release: () => boolean; most: Map<string, number>; mostAll: () => number } {
    const running = new Map<string, number>();
    const most = new Map<string, number>();
    let all = 0;
    let mostAll = 0;
    const gates: (() => void)[] = [];
    return {
      run: (host) => async () => {
        running.set(host, (running.get(host) ?? 0) + 1);
        most.set(host, Math.max(most.get(host) ?? 0, running.get(host) ?? 0));
        mostAll = Math.max(mostAll, ++all);
        await new Promise<void>((r) => gates.push(r));
        running.set(host, (running.get(host) ?? 0) - 1);
        all--;
      },
      release: () => {
        const g = gates.shift();
        g?.();
        return g !== undefined;
      },
      most,
      mostAll: () => mostAll,
    };
  }

  async function drain(g: ReturnType<typeof gated>, tasks: Promise<unknown>[]): Promise<void> {
    let left = tasks.length;
    void Promise.all(tasks.map((t) => t.finally(() => left--)));
    while (left > 0) {
      if (!g.release()) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(tasks);
  }

  it('--host-connections caps each host and --connections all of them together', async () => {
    const b = new ConnectionBudget(5, { hostCeiling: 3 });
    const g = gated();
    const tasks = [...Array.from({ length: 8 }, () => b.request(g.run('a'), { host: 'a' })), ...Array.from({ length: 8 }, () => b.request(g.run('b'), { host: 'b' }))];
    await drain(g, tasks);
    expect(g.most.get('a')).toBe(3);
    expect(g.most.get('b')).toBe(3);
    expect(g.mostAll()).toBe(5);
  });

  it('a task that fails with a 429 or 503 halves its host, not the others', async () => {
    const b = new ConnectionBudget(64);
    const busy = (status: number): Promise<void> =>
      b.request(() => Promise.reject(new ModelsyncError('E_HTTP', 'slow down', { status, retryable: true })), { host: 'cdn' }).catch(() => undefined);
    const start = startLevel(64);
    await busy(429);
    expect(b.hostLimit('cdn')).toBe(start / 2);
    await busy(503);
    expect(b.hostLimit('cdn')).toBe(start / 4);
    // Other failures say nothing about load.
    await b.request(() => Promise.reject(new ModelsyncError('E_HTTP', 'gone', { status: 404 })), { host: 'cdn' }).catch(() => undefined);
    expect(b.hostLimit('cdn')).toBe(start / 4);
    expect(b.hostLimit('other')).toBe(start);
  });

  it('waiting requests start in priority order, then first come', async () => {
    const b = new ConnectionBudget(1);
    const order: string[] = [];
    const g = gated();
    const first = b.request(g.run('h'), { host: 'h' });
    const later = [
      b.request(async () => void order.push('late-1'), { host: 'h', priority: 10 }),
      b.request(async () => void order.push('early'), { host: 'h', priority: 1 }),
      b.request(async () => void order.push('late-2'), { host: 'h', priority: 10 }),
    ];
    await drain(g, [first]);
    await Promise.all(later);
    expect(order).toEqual(['early', 'late-1', 'late-2']);
  });

  it('a request aborted while it waits never runs, and frees nothing it did not hold', async () => {
    const b = new ConnectionBudget(1);
    const g = gated();
    const first = b.request(g.run('h'), { host: 'h' });
    const ctrl = new AbortController();
    let ran = false;
    const waiting = b.request(async () => void (ran = true), { host: 'h', signal: ctrl.signal });
    ctrl.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
    const next = b.request(g.run('h'), { host: 'h' });
    await drain(g, [first, next]);
    expect(ran).toBe(false);
    expect(g.most.get('h')).toBe(1);
  });
});
