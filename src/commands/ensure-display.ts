import { fmt } from '../fmt.js';
import type { ModelProgress } from '../ondemand/service.js';
import { drawBar } from '../progress.js';
import { clearStatusLine, statusLineDrawn } from '../status-line.js';

export interface EnsureDisplay {
  /** The job's entries as they are now. */
  update(models: readonly ModelProgress[]): void;
  /** The bar (if any) is finished with a newline. */
  done(): void;
}

/** One entry in one line: `ready        loras/x.safetensors (12.0 MiB)`, `failed ...: E_CODE: why`. */
export function entryLine(m: ModelProgress): string {
  const size = m.total === undefined ? '' : ` (${fmt(m.total)})`;
  const note = m.unmanaged ? ' [not placed by modelsync: left as it is]' : '';
  const err = m.state === 'failed' && m.error ? `: ${m.error.code}: ${m.error.message}` : '';
  return `${m.state.padEnd(12)} ${m.dest}${size}${note}${err}`;
}

/**
 * What `modelsync ensure` shows on stderr while it waits. Not a terminal: one line per state
 * change of each entry (queued, downloading, verifying, ready, failed), for logs. A terminal:
 * one overall bar (bytes, speed, entries ready) redrawn in place, with a line above it as each
 * entry is ready or failed.
 */
export function ensureDisplay(out: NodeJS.WritableStream, tty: boolean): EnsureDisplay {
  const seen = new Map<number, string>();
  let last: readonly ModelProgress[] = [];
  let drawn = false;
  const draw = (): void => {
    const got = last.reduce((a, m) => a + m.bytes, 0);
    const total = last.reduce((a, m) => a + (m.total ?? 0), 0);
    const rate = last.reduce((a, m) => a + m.speed, 0);
    const ready = last.filter((m) => m.state === 'ready').length;
    drawBar(out, got, total, rate, `${ready}/${last.length} ready`);
    drawn = true;
  };
  const timer = tty ? setInterval(draw, 200) : undefined;
  timer?.unref();
  return {
    update(models) {
      last = models;
      models.forEach((m, i) => {
        if (seen.get(i) === m.state) return;
        seen.set(i, m.state);
        if (!tty) out.write(`${entryLine(m)}\n`);
        else if (m.state === 'ready' || m.state === 'failed') out.write(`${clearStatusLine()}${entryLine(m)}\n`);
      });
    },
    done() {
      if (timer) clearInterval(timer);
      if (drawn) {
        draw();
        out.write('\n');
        statusLineDrawn(false);
      }
    },
  };
}
