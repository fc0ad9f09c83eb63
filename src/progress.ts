import type { ContentKey } from './content-key.js';
import type { SyncEvents } from './sync/types.js';
import type { Entry } from './manifest/types.js';
import { statusLineDrawn } from './status-line.js';
import { fmt } from './sync/plan.js';

/** The bar itself, drawn in place: `[#####-----]  50% 1.0 MiB/2.0 MiB 512.0 KiB/s  TAIL`. */
export function drawBar(out: NodeJS.WritableStream, got: number, total: number, rate: number, tail: string): void {
  const pct = total > 0 ? Math.min(1, got / total) : 0;
  const width = 24;
  const bar = '#'.repeat(Math.round(pct * width)).padEnd(width, '-');
  out.write(`\r[${bar}] ${(pct * 100).toFixed(0).padStart(3)}% ${fmt(got)}/${fmt(total)} ${fmt(rate)}/s  ${tail}\x1b[K`);
  statusLineDrawn(true);
}

/**
 * A one-line progress bar on a terminal: bytes, rate, files. Redrawn at most 5 times a second;
 * nothing is drawn when stderr is not a TTY (logs are JSON there).
 */
export function progressBar(out: NodeJS.WriteStream): { events: SyncEvents; done(): void } {
  let total = 0;
  let got = 0;
  let active = 0;
  let finished = 0;
  const sized = new Set<string>();
  const started = performance.now();
  const draw = (): void => {
    const secs = (performance.now() - started) / 1000;
    drawBar(out, got, total, secs > 0 ? got / secs : 0, `${active} active, ${finished} done`);
  };
  let closed = false;
  const timer = setInterval(draw, 200);
  timer.unref();
  const events: SyncEvents = {
    entryState(e: Entry, state, detail) {
      if (state === 'downloading' && detail?.size !== undefined && !sized.has(e.dest)) {
        sized.add(e.dest);
        total += detail.size;
        active++;
      }
      if ((state === 'published' || state === 'failed') && sized.has(e.dest)) {
        active = Math.max(0, active - 1);
        finished++;
      }
    },
    bytes(n: number, _k: ContentKey) {
      got += n;
    },
  };
  return {
    events,
    // Called after the sync and again on the way out: the final bar is drawn once.
    done() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      if (total > 0) {
        draw();
        out.write('\n');
      }
      statusLineDrawn(false);
    },
  };
}
