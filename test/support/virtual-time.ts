import type { Clock } from '../../src/clock.js';

interface Sleeper {
  readonly at: number;
  readonly resolve: () => void;
}

/**
 * Virtual monotonic time for lease tests. Each node gets its own Clock view with its own offset
 * (monotonic clocks of two machines share nothing but their rate). `advance` moves time in small
 * steps and lets real file I/O settle in between; `jump` moves it without waking anyone, which is
 * what a process sees when it is continued after SIGSTOP: every timer is overdue at once.
 */
export class VirtualTime {
  private t = 0;
  private sleepers: Sleeper[] = [];

  clock(offset = 0): Clock {
    return {
      now: () => offset + this.t,
      sleep: (ms, signal) =>
        new Promise<void>((resolve, reject) => {
          if (signal?.aborted) return reject(signal.reason);
          const s: Sleeper = {
            at: this.t + ms,
            resolve: () => {
              signal?.removeEventListener('abort', onAbort);
              resolve();
            },
          };
          const onAbort = (): void => {
            this.sleepers = this.sleepers.filter((x) => x !== s);
            reject(signal?.reason);
          };
          signal?.addEventListener('abort', onAbort, { once: true });
          this.sleepers.push(s);
        }),
      random: () => 0.5,
    };
  }

  async advance(ms: number, step = 20): Promise<void> {
    for (let done = 0; done < ms; ) {
      const d = Math.min(step, ms - done);
      this.t += d;
      done += d;
      this.wake();
      await settle();
    }
  }

  /** Advance until `cond` holds (checked after every step), failing after `maxMs` of virtual time. */
  async advanceUntil(cond: () => boolean, maxMs: number, step = 20): Promise<number> {
    const start = this.t;
    while (!cond()) {
      if (this.t - start > maxMs) throw new Error(`condition not met within ${maxMs} virtual ms`);
      await this.advance(step, step);
    }
    return this.t - start;
  }

  jump(ms: number): void {
    this.t += ms;
  }

  private wake(): void {
    const due = this.sleepers.filter((s) => s.at <= this.t);
    this.sleepers = this.sleepers.filter((s) => s.at > this.t);
    for (const s of due) s.resolve();
  }
}

/** Let pending real I/O (a readFile, a rename) finish before virtual time moves on. */
function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 4));
}
