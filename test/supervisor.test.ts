import { describe, expect, it } from 'vitest';
import type { Clock } from '../src/clock.js';
import { pino } from 'pino';
import { backoffDelay, RestartTracker, wantsRestart, type BackoffPolicy } from '../src/daemon/backoff.js';
import { processAlive } from '../src/daemon/process-group.js';
import { Supervisor, type SupervisorOptions } from '../src/daemon/supervisor.js';

const POLICY: BackoffPolicy = { initialMs: 1000, maxMs: 4000, stableMs: 60_000, degradedAfter: 3 };
const OK = { code: 0, signal: null, unresponsive: false } as const;
const CRASH = { code: 1, signal: null, unresponsive: false } as const;

/** Virtual time: a backoff wait advances the clock and returns at once; `onSleep` can stop things. */
class VirtualClock implements Clock {
  t = 0;
  readonly sleeps: number[] = [];
  onSleep: (ms: number) => void = () => undefined;
  now(): number {
    return this.t;
  }
  random(): number {
    return 0.5;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    this.sleeps.push(ms);
    this.t += ms;
    this.onSleep(ms);
    return signal?.aborted ? Promise.reject(signal.reason) : Promise.resolve();
  }
}

/** Time for the health probes only: a wait moves it forward, yielding to real I/O each time. */
class ProbeClock implements Clock {
  t = 0;
  hungAt: number | undefined;
  now(): number {
    return this.t;
  }
  random(): number {
    return 0.5;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    this.t += ms;
    return new Promise((resolve) => setImmediate(resolve));
  }
}

function harness(script: string, over: Partial<SupervisorOptions> = {}): { sup: Supervisor; clock: VirtualClock; lines: string[]; events: string[]; logged: Record<string, unknown>[] } {
  const clock = new VirtualClock();
  const lines: string[] = [];
  const events: string[] = [];
  const logged: Record<string, unknown>[] = [];
  const sup = new Supervisor({
    command: process.execPath,
    args: ['-e', script],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ONLY_THIS: 'yes' },
    restart: 'on-failure',
    backoff: POLICY,
    clock,
    startupTimeoutMs: 0,
    stopTimeoutMs: 300,
    probeIntervalMs: 20,
    probeTimeoutMs: 1000,
    probeFailures: 2,
    probe: () => Promise.resolve(true),
    log: pino({ level: 'info' }, { write: (rec: string) => logged.push(JSON.parse(rec) as Record<string, unknown>) }),
    output: (stream, line) => lines.push(`${stream}:${line}`),
    events: {
      answering: () => events.push('answering'),
      unresponsive: (_pid, reason) => events.push(`unresponsive:${reason}`),
      exited: (_pid, exit) => events.push(`exited:${exit.code}`),
      backoff: (ms) => events.push(`backoff:${ms}`),
      degraded: (d) => events.push(`degraded:${d}`),
    },
    ...over,
  });
  return { sup, clock, lines, events, logged };
}

/** Resolves once a line matching `re` has been forwarded. */
async function lineMatching(lines: string[], re: RegExp): Promise<RegExpExecArray> {
  for (let i = 0; i < 500; i++) {
    for (const l of lines) {
      const m = re.exec(l);
      if (m) return m;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no line matching ${re} in ${JSON.stringify(lines)}`);
}

describe('backoff policy', () => {
  it('doubles from the initial delay and stops at the cap', () => {
    expect([1, 2, 3, 4, 5, 40].map((n) => backoffDelay(POLICY, n))).toEqual([1000, 2000, 4000, 4000, 4000, 4000]);
    expect(backoffDelay(POLICY, 0)).toBe(0);
  });

  it('decides restarts by policy', () => {
    expect(wantsRestart('never', CRASH)).toBe(false);
    expect(wantsRestart('always', OK)).toBe(true);
    expect(wantsRestart('on-failure', OK)).toBe(false);
    expect(wantsRestart('on-failure', CRASH)).toBe(true);
    expect(wantsRestart('on-failure', { code: 0, signal: null, unresponsive: true })).toBe(true);
  });

  it('counts quick failures, becomes degraded, and resets after a stable period', () => {
    const t = new RestartTracker(POLICY, 'on-failure');
    let now = 0;
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      t.started(now);
      now += 500;
      const d = t.exited(now, CRASH);
      if (d.restart) delays.push(d.delayMs);
      now += d.restart ? d.delayMs : 0;
    }
    expect(delays).toEqual([1000, 2000, 4000]);
    expect(t.degraded).toBe(true);
    // Up and answering long enough: the series is over while it still runs.
    t.started(now);
    expect(t.alive(now + 1000)).toBe(false);
    expect(t.alive(now + POLICY.stableMs)).toBe(true);
    expect(t.degraded).toBe(false);
    // A crash after a stable run starts a new series at the initial delay.
    t.started(now);
    expect(t.exited(now + POLICY.stableMs + 1, CRASH)).toEqual({ restart: true, delayMs: 1000 });
    expect(t.restarts).toBe(4);
  });

  it('gives up after --max-restarts starts in a row that never became healthy; a healthy run starts the count over', () => {
    const t = new RestartTracker({ ...POLICY, maxRestarts: 3 }, 'on-failure');
    let now = 0;
    const run = (healthy: boolean) => {
      t.started(now);
      if (healthy) t.healthy();
      now += 100;
      return t.exited(now, CRASH);
    };
    expect(run(false)).toMatchObject({ restart: true });
    expect(run(false)).toMatchObject({ restart: true });
    // A run that answered, even briefly: not a start that "never became healthy".
    expect(run(true)).toMatchObject({ restart: true });
    expect(run(false)).toMatchObject({ restart: true });
    expect(run(false)).toMatchObject({ restart: true });
    expect(run(false)).toEqual({ restart: false, gaveUp: true });
    // --restart never ends the run without "giving up"; 0 is no limit.
    const never = new RestartTracker({ ...POLICY, maxRestarts: 1 }, 'never');
    never.started(0);
    expect(never.exited(1, CRASH)).toEqual({ restart: false, gaveUp: false });
    const unlimited = new RestartTracker({ ...POLICY, maxRestarts: 0 }, 'always');
    for (let i = 0; i < 50; i++) {
      unlimited.started(i);
      expect(unlimited.exited(i, CRASH).restart).toBe(true);
    }
  });

  it('spaces out `--restart always` restarts of a child that exits 0 at once', () => {
    const t = new RestartTracker(POLICY, 'always');
    t.started(0);
    expect(t.exited(10, OK)).toEqual({ restart: true, delayMs: 1000 });
    t.started(1010);
    expect(t.exited(1020, OK)).toEqual({ restart: true, delayMs: 2000 });
  });
});

describe('Supervisor', () => {
  it('restarts a crashing child with exponential backoff and reports degraded (virtual time)', async () => {
    const h = harness('process.exit(3)');
    h.clock.onSleep = () => {
      if (h.clock.sleeps.length === 5) h.sup.stop();
    };
    expect((await h.sup.run()).code).toBe(3);
    expect(h.clock.sleeps).toEqual([1000, 2000, 4000, 4000, 4000]);
    // Five runs; the stop came during the fifth wait.
    expect(h.events.filter((e) => e.startsWith('exited'))).toHaveLength(5);
    // Degraded once the third failure in a row is in.
    expect(h.events.indexOf('degraded:true')).toBe(h.events.indexOf('exited:3', h.events.indexOf('backoff:2000')) + 1);
    expect(h.sup.tracker.restarts).toBe(5);
  });

  it('passes the exit code on under --restart never, and 128+signal for a signal death', async () => {
    expect((await harness('process.exit(7)', { restart: 'never' }).sup.run()).code).toBe(7);
    const killed = harness("process.kill(process.pid, 'SIGKILL')", { restart: 'never' });
    expect((await killed.sup.run()).code).toBe(137);
    expect(killed.clock.sleeps).toEqual([]);
  });

  it('ends after a clean exit under on-failure, restarts it under always', async () => {
    const clean = harness('process.exit(0)');
    expect((await clean.sup.run()).code).toBe(0);
    expect(clean.clock.sleeps).toEqual([]);
    const always = harness('process.exit(0)', { restart: 'always' });
    always.clock.onSleep = () => {
      if (always.clock.sleeps.length === 2) always.sup.stop();
    };
    expect((await always.sup.run()).code).toBe(0);
    expect(always.clock.sleeps).toEqual([1000, 2000]);
  });

  it('gives up on a child that exits at once, after --max-restarts starts (virtual time)', async () => {
    const h = harness('process.exit(1)', { backoff: { ...POLICY, maxRestarts: 4 } });
    expect(await h.sup.run()).toEqual({ code: 1, reason: 'gave-up' });
    expect(h.events.filter((e) => e.startsWith('exited'))).toHaveLength(4);
    expect(h.clock.sleeps).toEqual([1000, 2000, 4000]);
    expect(h.logged).toContainEqual(expect.objectContaining({ level: 50, starts: 4 }));
  });

  it('declares a hung child after (misses - 1) x interval + timeout from its first unanswered probe: 15 s by default (virtual probe time)', async () => {
    for (const [timeoutMs, expected] of [
      [5000, 15_000],
      [2000, 12_000],
      // A timeout beyond the interval: each probe starts when the last one gave up.
      [8000, 24_000],
    ] as const) {
      const probeClock = new ProbeClock();
      const starts: number[] = [];
      const h = harness('setInterval(() => {}, 1000)', {
        restart: 'never',
        startupTimeoutMs: 60_000,
        probeIntervalMs: 5000,
        probeTimeoutMs: timeoutMs,
        probeFailures: 3,
        probeClock,
        // Answers the startup probe; then hangs: each probe runs out its whole timeout.
        probe: (t) => {
          starts.push(probeClock.now());
          if (starts.length === 1) return Promise.resolve(true);
          expect(t).toBe(timeoutMs);
          probeClock.t += t;
          return Promise.resolve(false);
        },
        events: { unresponsive: () => (probeClock.hungAt = probeClock.now()) },
      });
      // Stopped with SIGTERM once declared hung.
      expect((await h.sup.run()).code).toBe(143);
      expect(starts.length).toBe(4);
      expect((probeClock.hungAt ?? 0) - (starts[1] ?? 0)).toBe(expected);
      expect(starts[1]).toBe(5000);
    }
  });

  it('continues a stopped (SIGSTOP) child along with SIGTERM, so it exits without waiting for SIGKILL', { timeout: 30_000 }, async () => {
    const h = harness("process.on('SIGTERM', () => { console.log('clean exit'); process.exit(0); }); console.log('up'); setInterval(() => {}, 1000);", { stopTimeoutMs: 120_000 });
    const running = h.sup.run();
    await lineMatching(h.lines, /^stdout:up$/);
    const pid = h.sup.pid ?? 0;
    process.kill(pid, 'SIGSTOP');
    h.sup.stop();
    // Not 137: it ran its SIGTERM handler, long before the 120 s stop timeout.
    expect(await running).toEqual({ code: 0, reason: 'stopped' });
    expect(h.lines).toContain('stdout:clean exit');
  });

  it('resolves 127 when the command does not exist', async () => {
    const h = harness('', { command: '/nonexistent/comfyui-python' });
    expect((await h.sup.run()).code).toBe(127);
    expect(h.logged).toContainEqual(expect.objectContaining({ level: 50, command: '/nonexistent/comfyui-python', msg: 'cannot start the command' }));
  });

  it('forwards output line by line and gives the child exactly the environment it was handed', async () => {
    const h = harness("process.stdout.write(JSON.stringify(process.env) + '\\nfirst\\nno newline at the end'); process.stderr.write('on stderr\\n')", { restart: 'never' });
    expect((await h.sup.run()).code).toBe(0);
    const envLine = h.lines.find((l) => l.startsWith('stdout:{'));
    expect(JSON.parse((envLine ?? '').slice('stdout:'.length))).toEqual({ PATH: process.env.PATH ?? '/usr/bin:/bin', ONLY_THIS: 'yes' });
    expect(h.lines).toEqual(expect.arrayContaining(['stdout:first', 'stdout:no newline at the end', 'stderr:on stderr']));
  });

  it('stops a child that never answers within the startup timeout and counts it as a failure', async () => {
    const h = harness('setInterval(() => {}, 1000)', { restart: 'never', startupTimeoutMs: 200, probe: () => Promise.resolve(false) });
    // Node dies of the SIGTERM: 128 + 15.
    expect((await h.sup.run()).code).toBe(143);
    expect(h.events[0]).toMatch(/^unresponsive:no answer within the startup timeout/);
  });

  it('stops a child that stops answering', async () => {
    let lines: string[] = [];
    // Answers until its SIGTERM handler is in place, then goes quiet.
    const h = harness("process.on('SIGTERM', () => process.exit(0)); console.log('armed'); setInterval(() => {}, 1000)", {
      restart: 'never',
      startupTimeoutMs: 5000,
      probe: () => Promise.resolve(!lines.includes('stdout:armed')),
    });
    lines = h.lines;
    // It exits 0 on our SIGTERM, but it was stopped for hanging: a failure all the same.
    expect((await h.sup.run()).code).toBe(1);
    expect(h.events.slice(0, 2)).toEqual(['answering', 'unresponsive:2 health probes in a row went unanswered']);
  });

  it('escalates to SIGKILL when the child ignores SIGTERM, and leaves no process of its group behind', async () => {
    const script = [
      "const { spawn } = require('node:child_process');",
      // A grandchild in the same group that ignores SIGTERM too.
      "const g = spawn('sh', ['-c', 'trap \"\" TERM; while :; do sleep 1; done'], { stdio: 'ignore' });",
      "process.on('SIGTERM', () => console.log('ignoring SIGTERM'));",
      "console.log('grandchild ' + g.pid);",
      'setInterval(() => {}, 1000);',
    ].join('\n');
    const h = harness(script);
    const running = h.sup.run();
    const m = await lineMatching(h.lines, /^stdout:grandchild (\d+)$/);
    const grandchild = Number(m[1]);
    expect(processAlive(grandchild)).toBe(true);
    h.sup.stop();
    expect(await running).toEqual({ code: 137, reason: 'stopped' });
    expect(h.lines).toContain('stdout:ignoring SIGTERM');
    expect(processAlive(grandchild)).toBe(false);
    expect(h.clock.sleeps).toEqual([]);
  });

  it('stops what the child left in its group when it exits on its own', async () => {
    const script = "const g = require('node:child_process').spawn('sleep', ['1000'], { stdio: 'ignore' }); console.log('grandchild ' + g.pid); setTimeout(() => process.exit(0), 50);";
    const h = harness(script, { restart: 'never' });
    expect((await h.sup.run()).code).toBe(0);
    const m = await lineMatching(h.lines, /^stdout:grandchild (\d+)$/);
    expect(processAlive(Number(m[1]))).toBe(false);
  });
});
