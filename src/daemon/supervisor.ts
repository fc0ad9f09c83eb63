import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { systemClock, type Clock } from '../clock.js';
import type { RestartPolicy } from '../config.js';
import type { Logger } from '../log.js';
import { RestartTracker, type BackoffPolicy, type ChildExit } from './backoff.js';
import { lineSplitter, type LineEnd } from './lines.js';
import { ParentDeathGuard, guardianCommand } from './parent-death.js';
import { exitCodeOf, groupAlive, signalGroup } from './process-group.js';

/**
 * The one module that starts processes. The child leads its own process group (detached), so
 * a stop reaches everything ComfyUI started, and a terminal's Ctrl-C reaches only us.
 */

export interface SupervisorOptions {
  readonly command: string;
  /** An argv array, passed as is: never split on spaces, never through a shell. */
  readonly args: readonly string[];
  /** Already scrubbed of modelsync's secrets. */
  readonly env: Readonly<Record<string, string>>;
  readonly restart: RestartPolicy;
  readonly backoff: BackoffPolicy;
  /** Backoff waits and run lengths; stop timeouts use real time. */
  readonly clock: Clock;
  /** The health probes' schedule (real time unless a test says otherwise). */
  readonly probeClock?: Clock;
  /** Time for the first answer; 0: never probe, the child counts as up once spawned. */
  readonly startupTimeoutMs: number;
  readonly stopTimeoutMs: number;
  /** From the start of one probe to the start of the next, once the child has answered. */
  readonly probeIntervalMs: number;
  readonly probeTimeoutMs: number;
  readonly probeFailures: number;
  /** One health request: true when the child answered. */
  readonly probe: (timeoutMs: number, signal: AbortSignal) => Promise<boolean>;
  readonly log: Logger;
  /** Each line of the child's output, with its own ending ('' where it had none). */
  readonly output: (stream: 'stdout' | 'stderr', line: string, end: LineEnd, pid: number) => void;
  readonly events?: SupervisorEvents;
}

export interface SupervisorEvents {
  spawned?(pid: number): void;
  answering?(pid: number): void;
  unresponsive?(pid: number, reason: string): void;
  exited?(pid: number, exit: ChildExit): void;
  /** No restart after all: `starts` runs in a row never became healthy (--max-restarts). */
  gaveUp?(starts: number, exit: ChildExit): void;
  backoff?(delayMs: number, failures: number): void;
  degraded?(degraded: boolean): void;
}

interface Running {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  unresponsive: boolean;
  done: boolean;
  killTimer: NodeJS.Timeout | undefined;
  streamsClosed: Promise<void>;
  /** Takes the group down if the daemon dies first (parent-death.ts). */
  readonly guard: ParentDeathGuard | undefined;
}

/** How supervision ended: the last run's exit code, and why there is no next run. */
export interface SupervisionEnd {
  readonly code: number;
  /** `exited`: by the restart policy; `stopped`: stop() was called; `gave-up`: --max-restarts; `spawn-failed`: 127/126. */
  readonly reason: 'exited' | 'stopped' | 'gave-up' | 'spawn-failed';
}

/** ENOENT: no such command (127, as a shell says); anything else that stops exec: 126. */
export const SPAWN_FAILED_NOT_FOUND = 127;
export const SPAWN_FAILED = 126;

export class Supervisor {
  readonly tracker: RestartTracker;
  private current: Running | undefined;
  private stopping = false;
  private readonly stopCtrl = new AbortController();

  constructor(private readonly opts: SupervisorOptions) {
    this.tracker = new RestartTracker(opts.backoff, opts.restart);
  }

  get pid(): number | undefined {
    return this.current?.pid;
  }

  /**
   * Run the child until the restart policy lets it end, --max-restarts gives up on it, or stop()
   * is called; resolves with the last exit code (the child's, 128+signal for a signal death) and
   * why it ended. Never rejects for the child's sake: a command that cannot be started ends with
   * 127/126, after a log line.
   */
  async run(): Promise<SupervisionEnd> {
    let last = 0;
    for (;;) {
      if (this.stopping) return { code: last, reason: 'stopped' };
      const r = await this.start();
      if (typeof r === 'number') return { code: r, reason: 'spawn-failed' };
      const exit = await this.watch(r);
      last = exit.code;
      this.opts.events?.exited?.(r.pid, exit);
      if (this.stopping) return { code: last, reason: 'stopped' };
      const wasDegraded = this.tracker.degraded;
      const d = this.tracker.exited(this.opts.clock.now(), exit);
      if (this.tracker.degraded !== wasDegraded) this.opts.events?.degraded?.(this.tracker.degraded);
      if (!d.restart) {
        if (!d.gaveUp) return { code: last, reason: 'exited' };
        this.opts.log.error({ code: exit.code, signal: exit.signal, starts: this.tracker.unhealthyStarts }, 'the child never became healthy in the last starts in a row; giving up on it');
        this.opts.events?.gaveUp?.(this.tracker.unhealthyStarts, exit);
        return { code: last, reason: 'gave-up' };
      }
      this.opts.log.warn({ code: exit.code, signal: exit.signal, delayMs: d.delayMs, failures: this.tracker.failures }, 'child exited; restarting after backoff');
      this.opts.events?.backoff?.(d.delayMs, this.tracker.failures);
      try {
        await this.opts.clock.sleep(d.delayMs, this.stopCtrl.signal);
      } catch {
        return { code: last, reason: 'stopped' };
      }
    }
  }

  /** Graceful stop: SIGTERM to the group, SIGKILL after the stop timeout; run() then resolves. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.stopCtrl.abort();
    if (this.current) this.terminate(this.current);
  }

  /** Impatient stop (a second Ctrl-C): SIGKILL the group now. */
  kill(): void {
    this.stop();
    const r = this.current;
    if (r && !r.done) signalGroup(r.pid, 'SIGKILL');
  }

  private async start(): Promise<Running | number> {
    const { command, args, env } = this.opts;
    // Started first, so that no moment exists in which the child runs and nobody guards it.
    const guard = this.startGuardian();
    const child = spawn(command, [...args], { detached: true, env: { ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    if (child.pid !== undefined) guard?.watch(child.pid);
    else guard?.dismiss();
    if (child.pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once('error', resolve));
      const code = (err as NodeJS.ErrnoException).code === 'ENOENT' ? SPAWN_FAILED_NOT_FOUND : SPAWN_FAILED;
      this.opts.log.error({ command, err: err.message }, 'cannot start the command');
      return code;
    }
    child.on('error', (err) => this.opts.log.warn({ err: err.message }, 'child process error'));
    const pid = child.pid;
    const streams = (['stdout', 'stderr'] as const).map((name) => {
      const split = lineSplitter((line, end) => this.opts.output(name, line, end, pid));
      const s = child[name];
      return new Promise<void>((resolve) => {
        if (!s) return resolve();
        s.on('data', (d: Buffer) => split.write(d));
        s.once('close', () => {
          split.end();
          resolve();
        });
      });
    });
    const r: Running = { child, pid: child.pid, exited, unresponsive: false, done: false, killTimer: undefined, streamsClosed: Promise.all(streams).then(() => undefined), guard };
    this.current = r;
    this.tracker.started(this.opts.clock.now());
    this.opts.log.info({ childPid: r.pid, command }, 'child started');
    this.opts.events?.spawned?.(r.pid);
    // A stop that arrived while we were spawning.
    if (this.stopping) this.terminate(r);
    return r;
  }

  private async watch(r: Running): Promise<ChildExit> {
    const probing = new AbortController();
    const monitor = this.monitor(r, probing.signal).catch((e: unknown) => this.opts.log.error({ err: String(e) }, 'health monitor failed'));
    const { code, signal } = await r.exited;
    probing.abort();
    await monitor;
    await this.reapGroup(r);
    r.done = true;
    r.guard?.dismiss();
    clearTimeout(r.killTimer);
    // A process that left the group (setsid) may still hold our pipes: do not wait for it.
    await Promise.race([r.streamsClosed, sleep(200, undefined, { ref: false })]);
    r.child.stdout?.destroy();
    r.child.stderr?.destroy();
    this.current = undefined;
    // A child we stopped because it hung may well exit 0 on our SIGTERM: it still failed.
    const status = exitCodeOf(code, signal);
    return { code: r.unresponsive && status === 0 ? 1 : status, signal, unresponsive: r.unresponsive };
  }

  /** The child's guardian (parent-death.ts); without one the child still runs, and that is said. */
  private startGuardian(): ParentDeathGuard | undefined {
    const g = guardianCommand(this.opts.stopTimeoutMs);
    const failed = (e: unknown): undefined => {
      this.opts.log.warn({ err: e instanceof Error ? e.message : String(e), command: g.command }, 'cannot start the guardian: the child would outlive a killed modelsync');
      return undefined;
    };
    try {
      // cwd /: it lives as long as the child and must not keep a mount (the models volume) busy.
      const proc = spawn(g.command, [...g.args], { detached: true, cwd: '/', env: { PATH: '/usr/bin:/bin' }, stdio: ['pipe', 'ignore', 'ignore'] });
      if (proc.pid !== undefined) return new ParentDeathGuard(proc, this.opts.log);
      proc.once('error', failed);
      return undefined;
    } catch (e) {
      return failed(e);
    }
  }

  /**
   * Startup: poll until the first answer or the startup timeout. Then a probe starts every
   * interval (start to start, so a slow answer does not stretch the schedule) and waits up to the
   * probe timeout: a child that stops answering is declared hung (misses - 1) x interval +
   * timeout after the first probe it leaves unanswered, 15 s with the defaults.
   */
  private async monitor(r: Running, signal: AbortSignal): Promise<void> {
    const o = this.opts;
    const clock = o.probeClock ?? systemClock;
    const wait = (ms: number): Promise<void> => (ms > 0 ? clock.sleep(ms, signal).catch(() => undefined) : Promise.resolve());
    if (o.startupTimeoutMs > 0) {
      const deadline = clock.now() + o.startupTimeoutMs;
      for (;;) {
        const left = deadline - clock.now();
        if (await o.probe(Math.max(1, Math.min(o.probeTimeoutMs, left)), signal)) break;
        if (signal.aborted) return;
        if (clock.now() >= deadline) {
          this.hung(r, `no answer within the startup timeout (${o.startupTimeoutMs / 1000} s)`);
          return;
        }
        await wait(Math.min(100, o.probeIntervalMs));
        if (signal.aborted) return;
      }
      this.tracker.healthy();
    }
    o.events?.answering?.(r.pid);
    let misses = 0;
    let next = clock.now() + o.probeIntervalMs;
    for (;;) {
      await wait(next - clock.now());
      if (signal.aborted) return;
      next += o.probeIntervalMs;
      // Unprobed, a run counts as healthy once it has lasted the stable period.
      if (o.startupTimeoutMs === 0 && this.tracker.stableAt(o.clock.now())) this.tracker.healthy();
      const ok = o.startupTimeoutMs === 0 || (await o.probe(o.probeTimeoutMs, signal));
      if (signal.aborted) return;
      // A probe that took longer than the interval: the next one starts now, not in a burst.
      next = Math.max(next, clock.now());
      if (ok) {
        if (misses >= 1) o.log.info({ childPid: r.pid }, 'child answers again');
        misses = 0;
        const wasDegraded = this.tracker.degraded;
        if (this.tracker.alive(o.clock.now()) && wasDegraded) o.events?.degraded?.(false);
        continue;
      }
      misses++;
      if (misses >= o.probeFailures) {
        this.hung(r, `${misses} health probes in a row went unanswered`);
        return;
      }
    }
  }

  private hung(r: Running, reason: string): void {
    this.opts.log.error({ childPid: r.pid, reason }, 'child is not answering; stopping it');
    r.unresponsive = true;
    this.opts.events?.unresponsive?.(r.pid, reason);
    this.terminate(r);
  }

  /** SIGTERM (and SIGCONT) to the group now, SIGKILL once the stop timeout has passed. */
  private terminate(r: Running): void {
    if (r.done || r.killTimer !== undefined) return;
    this.opts.log.info({ childPid: r.pid, stopTimeoutMs: this.opts.stopTimeoutMs }, 'sending SIGTERM to the child process group');
    signalGroup(r.pid, 'SIGTERM');
    // A stopped process (SIGSTOP, a debugger, a frozen cgroup's leftover) keeps SIGTERM pending
    // until it runs again: continue it, so that it can exit now rather than at SIGKILL time.
    signalGroup(r.pid, 'SIGCONT');
    r.killTimer = setTimeout(() => {
      if (groupAlive(r.pid)) {
        this.opts.log.warn({ childPid: r.pid }, 'child process group did not stop in time; sending SIGKILL');
        signalGroup(r.pid, 'SIGKILL');
      }
    }, this.opts.stopTimeoutMs);
  }

  /**
   * The leader is gone; its group may not be (workers, a `sleep` a custom node started). They
   * get the same SIGTERM-then-SIGKILL, so nothing ComfyUI started outlives it. The group's id
   * cannot be reused while any member lives, so signalling it after the leader died is safe.
   */
  private async reapGroup(r: Running): Promise<void> {
    if (!groupAlive(r.pid)) return;
    this.terminate(r);
    const deadline = performance.now() + this.opts.stopTimeoutMs + 1000;
    while (groupAlive(r.pid) && performance.now() < deadline) await sleep(25);
  }
}

/**
 * Run a short helper (systemd-notify) to completion: secrets-free env, no output kept.
 * Resolves with its exit code, or undefined when it could not be started.
 */
export function runHelper(command: string, args: readonly string[], env: Readonly<Record<string, string>>, timeoutMs = 5000): Promise<number | undefined> {
  return new Promise((resolve) => {
    const child = spawn(command, [...args], { env: { ...env }, stdio: 'ignore', timeout: timeoutMs });
    child.once('error', () => resolve(undefined));
    child.once('exit', (code, signal) => resolve(exitCodeOf(code, signal)));
  });
}
