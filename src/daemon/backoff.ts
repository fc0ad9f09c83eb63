import type { RestartPolicy } from '../config.js';

export interface BackoffPolicy {
  /** Wait before the first restart; doubles with each failure in a row. */
  readonly initialMs: number;
  readonly maxMs: number;
  /** A run that lasted this long was stable: the failure count starts again from zero. */
  readonly stableMs: number;
  /** Failures in a row that make the child crash-looping (degraded). */
  readonly degradedAfter: number;
}

/** How a run of the child ended. */
export interface ChildExit {
  /** Exit status, or 128+signal for a death by signal (the shell's convention). */
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  /** We killed it because it stopped answering (or never started to). */
  readonly unresponsive: boolean;
}

export type RestartDecision = { readonly restart: false } | { readonly restart: true; readonly delayMs: number };

/** Delay before restart number `failures` (1-based) in a row: initial * 2^(n-1), capped. */
export function backoffDelay(policy: BackoffPolicy, failures: number): number {
  if (failures <= 0) return 0;
  // 2^31 already exceeds any sensible cap; stop the exponent there to stay finite.
  return Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(failures - 1, 31));
}

/** Whether the restart policy wants another run after this exit. */
export function wantsRestart(policy: RestartPolicy, exit: ChildExit): boolean {
  if (policy === 'never') return false;
  if (policy === 'always') return true;
  return exit.code !== 0 || exit.unresponsive;
}

/**
 * Restart bookkeeping as data: the supervisor feeds it run starts, stable runs and exits (with
 * times from its Clock) and gets back what to do. Pure, so backoff is tested in virtual time.
 */
export class RestartTracker {
  /** Runs in a row that ended before they were stable. */
  failures = 0;
  restarts = 0;
  private startedAt = 0;

  constructor(
    private readonly policy: BackoffPolicy,
    private readonly restartPolicy: RestartPolicy,
  ) {}

  get degraded(): boolean {
    return this.failures >= this.policy.degradedAfter;
  }

  started(now: number): void {
    this.startedAt = now;
  }

  /** The child answered at `now`; once it has been up for the stable period, failures reset. */
  alive(now: number): boolean {
    if (this.failures > 0 && now - this.startedAt >= this.policy.stableMs) {
      this.failures = 0;
      return true;
    }
    return false;
  }

  exited(now: number, exit: ChildExit): RestartDecision {
    // Every exit counts, a clean one too (`--restart always` with a child that exits 0 at once
    // must not spin); after a stable run it is the first of a new series.
    if (now - this.startedAt >= this.policy.stableMs) this.failures = 0;
    this.failures++;
    if (!wantsRestart(this.restartPolicy, exit)) return { restart: false };
    this.restarts++;
    return { restart: true, delayMs: backoffDelay(this.policy, this.failures) };
  }
}
