import type { RestartPolicy } from '../config.js';

export interface BackoffPolicy {
  /** Wait before the first restart; doubles with each failure in a row. */
  readonly initialMs: number;
  readonly maxMs: number;
  /** A run that lasted this long was stable: the failure count starts again from zero. */
  readonly stableMs: number;
  /** Failures in a row that make the child crash-looping (degraded). */
  readonly degradedAfter: number;
  /** Starts in a row that never became healthy, after which there is no other; 0: no limit. */
  readonly maxRestarts?: number;
}

/** How a run of the child ended. */
export interface ChildExit {
  /** Exit status, or 128+signal for a death by signal (the shell's convention). */
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  /** We killed it because it stopped answering (or never started to). */
  readonly unresponsive: boolean;
}

/** `gaveUp`: the policy would restart, but --max-restarts starts in a row never became healthy. */
export type RestartDecision = { readonly restart: false; readonly gaveUp: boolean } | { readonly restart: true; readonly delayMs: number };

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
  /** Starts in a row in which the child never became healthy (answered, or stayed up without probes). */
  unhealthyStarts = 0;
  private startedAt = 0;
  private healthyThisRun = false;

  constructor(
    private readonly policy: BackoffPolicy,
    private readonly restartPolicy: RestartPolicy,
  ) {}

  get degraded(): boolean {
    return this.failures >= this.policy.degradedAfter;
  }

  started(now: number): void {
    this.startedAt = now;
    this.healthyThisRun = false;
  }

  /** This run became healthy (its first answer; or, unprobed, a stable run): the give-up count starts over. */
  healthy(): void {
    this.healthyThisRun = true;
    this.unhealthyStarts = 0;
  }

  /** The run has lasted the stable period. */
  stableAt(now: number): boolean {
    return now - this.startedAt >= this.policy.stableMs;
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
    if (!this.healthyThisRun) this.unhealthyStarts++;
    if (!wantsRestart(this.restartPolicy, exit)) return { restart: false, gaveUp: false };
    const max = this.policy.maxRestarts ?? 0;
    if (max > 0 && this.unhealthyStarts >= max) return { restart: false, gaveUp: true };
    this.restarts++;
    return { restart: true, delayMs: backoffDelay(this.policy, this.failures) };
  }
}
