import { mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../src/clock.js';
import { ModelsyncError } from '../src/errors.js';
import { Lease, acquireOrWait, type LeaseOptions } from '../src/store/lease.js';
import { VirtualTime } from './support/virtual-time.js';

const STALE = 1000;
const BEAT = 100;
const NAME = `sha256-${'ab'.repeat(32)}`;

let dir: string;
let held: Lease[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-lease-'));
  held = [];
});

afterEach(async () => {
  await Promise.allSettled(held.map((l) => l.release()));
  await rm(dir, { recursive: true, force: true });
});

function opts(token: string, clock: Clock): LeaseOptions {
  return { dir, name: NAME, token, staleMs: STALE, heartbeatMs: BEAT, clock };
}

async function owner(): Promise<{ token: string; beat: number } | undefined> {
  try {
    return JSON.parse(await readFile(path.join(dir, NAME, 'owner'), 'utf8')) as { token: string; beat: number };
  } catch {
    return undefined;
  }
}

/** acquireOrWait in the background, with its outcome observable without awaiting it. */
function observe(o: LeaseOptions, isDone: () => Promise<boolean> = () => Promise.resolve(false)): { outcome(): Lease | 'done' | Error | undefined; stop(): void } {
  const ctrl = new AbortController();
  let result: Lease | 'done' | Error | undefined;
  acquireOrWait(o, isDone, ctrl.signal).then(
    (r) => {
      result = r;
      if (r !== 'done') held.push(r);
    },
    (e: unknown) => (result = e instanceof Error ? e : new Error(String(e))),
  );
  return { outcome: () => result, stop: () => ctrl.abort(new Error('test over')) };
}

async function hold(o: LeaseOptions): Promise<Lease> {
  const l = await Lease.tryAcquire(o);
  if (!l) throw new Error('expected to acquire');
  held.push(l);
  return l;
}

describe('lease staleness is judged on the observer’s own monotonic clock', () => {
  it('never breaks a holder that keeps beating, however far apart the two clocks are', async () => {
    const time = new VirtualTime();
    const holder = await hold(opts('aaaa', time.clock(1e12)));
    const watcher = observe(opts('bbbb', time.clock(-5e9)));
    // Small virtual steps: a busy machine must not stall the holder's real file I/O for a whole
    // stale period of virtual time (with 20 ms steps that is only ~200 ms of real time).
    await time.advance(STALE * 6, 5);
    expect(watcher.outcome()).toBeUndefined();
    expect(await holder.check()).toBe(true);
    expect((await owner())?.beat).toBeGreaterThan(20);
    watcher.stop();
  });

  it('takes over a dead holder only after staleMs of its own clock, whatever the lease file claims', async () => {
    // A dead node whose clock ran a year ahead, and whose lease looks ancient by mtime: neither
    // the content nor the file times may shorten the wait.
    await mkdir(path.join(dir, NAME));
    await writeFile(path.join(dir, NAME, 'owner'), JSON.stringify({ token: 'dead', beat: 7, at: new Date(Date.now() + 365 * 86_400_000).toISOString() }));
    await utimes(path.join(dir, NAME, 'owner'), new Date(0), new Date(0));
    const time = new VirtualTime();
    const watcher = observe(opts('cccc', time.clock(42)));
    await time.advance(STALE - 100);
    expect(watcher.outcome()).toBeUndefined();
    await time.advanceUntil(() => watcher.outcome() !== undefined, STALE * 3);
    expect(watcher.outcome()).toBeInstanceOf(Lease);
    expect((await owner())?.token).toBe('cccc');
    // The broken lease was moved away and removed, not left beside the new one.
    expect(await readdir(dir)).toEqual([NAME]);
  });

  it('takes over a lease whose holder died between mkdir and its first owner write', async () => {
    await mkdir(path.join(dir, NAME));
    const time = new VirtualTime();
    const watcher = observe(opts('dddd', time.clock()));
    await time.advance(STALE - 100);
    expect(watcher.outcome()).toBeUndefined();
    await time.advanceUntil(() => watcher.outcome() !== undefined, STALE * 3);
    expect(watcher.outcome()).toBeInstanceOf(Lease);
  });

  it('lets exactly one of several observers hold a stale lease', async () => {
    await mkdir(path.join(dir, NAME));
    await writeFile(path.join(dir, NAME, 'owner'), JSON.stringify({ token: 'dead', beat: 1 }));
    const time = new VirtualTime();
    const watchers = ['e1e1', 'e2e2', 'e3e3'].map((t, i) => observe(opts(t, time.clock(i * 1e6))));
    await time.advanceUntil(() => watchers.some((w) => w.outcome() instanceof Lease), STALE * 4);
    // Give any racing breaker time to act and its victim a heartbeat to notice.
    await time.advance(STALE / 2);
    const leases = watchers.map((w) => w.outcome()).filter((o): o is Lease => o instanceof Lease);
    const stillHeld = [];
    for (const l of leases) if (await l.check()) stillHeld.push(l);
    expect(stillHeld).toHaveLength(1);
    watchers.forEach((w) => w.stop());
  });

  it('answers done without downloading when the blob was committed between the last look and the mkdir', async () => {
    const time = new VirtualTime();
    let looks = 0;
    const got = await acquireOrWait(opts('ffff', time.clock()), () => Promise.resolve(looks++ > 0), new AbortController().signal);
    expect(got).toBe('done');
    // The lease it briefly took is gone again, so no peer waits on it.
    expect(await readdir(dir)).toEqual([]);
  });

  it('returns done as soon as the holder commits, while still waiting on its live lease', async () => {
    const time = new VirtualTime();
    await hold(opts('1111', time.clock()));
    let committed = false;
    const watcher = observe(opts('2222', time.clock()), () => Promise.resolve(committed));
    await time.advance(BEAT * 3);
    expect(watcher.outcome()).toBeUndefined();
    committed = true;
    await time.advanceUntil(() => watcher.outcome() !== undefined, STALE);
    expect(watcher.outcome()).toBe('done');
  });
});

describe('a holder that was stopped notices it lost the lease', () => {
  it('fence() refuses writes after a takeover, and never overwrites the new owner', async () => {
    // Two machines: the holder's time is frozen (SIGSTOP), the peer's runs on.
    const holderTime = new VirtualTime();
    const peerTime = new VirtualTime();
    const holder = await hold(opts('5555', holderTime.clock()));
    await expect(holder.fence()).resolves.toBeUndefined();
    const peer = observe(opts('6666', peerTime.clock()));
    await peerTime.advanceUntil(() => peer.outcome() !== undefined, STALE * 3);
    expect(peer.outcome()).toBeInstanceOf(Lease);

    // SIGCONT: the holder's clock has moved on by the time it was stopped; no timer ran yet.
    holderTime.jump(STALE * 2);
    const err = await holder.fence().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ModelsyncError);
    expect((err as ModelsyncError).code).toBe('E_LEASE_LOST');
    expect(holder.signal.aborted).toBe(true);
    // Its overdue heartbeat runs now and must not write either.
    await holderTime.advance(BEAT * 2);
    expect((await owner())?.token).toBe('6666');
    const peerLease = peer.outcome() as Lease;
    expect(await peerLease.check()).toBe(true);
    // Releasing a lost lease leaves the new owner's lease alone.
    await holder.release();
    expect((await owner())?.token).toBe('6666');
  });

  it('fence() after a short stop (no takeover) renews the lease and lets the holder go on', async () => {
    const time = new VirtualTime();
    const holder = await hold(opts('7777', time.clock()));
    const before = (await owner())?.beat ?? 0;
    time.jump(STALE * 0.7);
    await expect(holder.fence()).resolves.toBeUndefined();
    expect((await owner())?.beat).toBeGreaterThan(before);
    expect(holder.signal.aborted).toBe(false);
  });

  it('a heartbeat that finds another owner aborts the holder’s signal with E_LEASE_LOST', async () => {
    const time = new VirtualTime();
    const holder = await hold(opts('8888', time.clock()));
    // A peer broke and retook it while we were away (what breakStale + tryAcquire do).
    await writeFile(path.join(dir, NAME, 'owner'), JSON.stringify({ token: '9999', beat: 1 }));
    await time.advanceUntil(() => holder.signal.aborted, BEAT * 5);
    expect((holder.signal.reason as ModelsyncError).code).toBe('E_LEASE_LOST');
  });

  it('release() removes the lease so the next node takes it at once', async () => {
    const time = new VirtualTime();
    const holder = await hold(opts('abab', time.clock()));
    await holder.release();
    await expect(stat(path.join(dir, NAME))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(dir)).toEqual([]);
    const next = await Lease.tryAcquire(opts('cdcd', time.clock()));
    expect(next).toBeInstanceOf(Lease);
    if (next) held.push(next);
  });
});
