import type { FileHandle } from 'node:fs/promises';
import type { Logger } from '../log.js';
import type { ChunkMap } from './chunks.js';
import { writeJournal, type Journal } from './journal.js';

/**
 * Pause between fdatasyncs of the partial. Each one is writeback the final fsync would do anyway,
 * so a short pause mostly keeps the dirty backlog left for that final fsync small.
 */
const DURABLE_EVERY_MS = 250;
/**
 * Pause between rewrites of the page-cache progress (no fdatasync: a few hundred bytes). This is
 * what a SIGKILLed download resumes from on the same boot, so it bounds the bytes fetched twice;
 * progress gated on fdatasync trails the network by however long the disk takes to flush.
 */
const CACHED_EVERY_MS = 100;

export interface FlusherParams {
  readonly fh: FileHandle;
  readonly journalPath: string;
  readonly version: string;
  readonly map: ChunkMap;
  /** Bytes per chunk known to be on stable storage when the download (re)started. */
  readonly durable: readonly number[];
  /** This kernel's boot id; without one only fdatasync'ed progress is recorded. */
  readonly boot: string | undefined;
  readonly log: Logger;
  /** Awaited before every journal write (see DownloadParams.fence). */
  readonly fence?: (() => Promise<void>) | undefined;
}

/**
 * Where a journal lets a download resume: its page-cache progress when it was noted under this
 * same boot (a killed process's writes are still in the page cache), else its fdatasync'ed
 * progress. Either way the bytes are re-hashed from the partial before anything is committed.
 */
export function resumePoint(j: Journal, boot: string | undefined): { written: number[]; durable: number[] } {
  const durable = [...j.written];
  const c = j.cached;
  const sameBoot = boot !== undefined && j.boot === boot && Array.isArray(c) && c.length === durable.length;
  const usable = sameBoot && c.every((n, i) => Number.isInteger(n) && n >= (durable[i] ?? 0));
  return { written: usable ? [...c] : [...durable], durable };
}

/**
 * Keep the journal current while chunks land, in two loops: fdatasync then record the durable
 * progress, and (with a boot id) record the page-cache progress in between. Each loop times its
 * next round from the end of the last one: an fdatasync slower than the pause would otherwise
 * pile rounds up without bound. Journal writes go one at a time (they share a temp name).
 */
export function journalFlusher(p: FlusherParams): { stop(): Promise<void>; final(): Promise<void> } {
  let durable = p.durable;
  let stopped = false;
  let chain: Promise<void> = Promise.resolve();
  const timers = new Set<NodeJS.Timeout>();
  const running = new Set<Promise<void>>();
  const warn = (e: unknown): void => p.log.warn({ err: String(e) }, 'journal write failed');

  const record = (): Promise<void> => {
    const step = chain.then(async () => {
      await p.fence?.();
      const j: Journal = {
        v: 1,
        version: p.version,
        size: p.map.size,
        chunkSize: p.map.chunkSize,
        written: durable,
        ...(p.boot === undefined ? {} : { boot: p.boot, cached: [...p.map.written] }),
      };
      await writeJournal(p.journalPath, j);
    });
    chain = step.catch(() => undefined);
    return step;
  };
  const sync = async (): Promise<void> => {
    const snapshot = [...p.map.written];
    await p.fh.datasync();
    durable = snapshot;
  };
  const loop = (every: number, round: () => Promise<void>): void => {
    if (stopped) return;
    const t = setTimeout(() => {
      timers.delete(t);
      const r = round().catch(warn);
      running.add(r);
      void r.finally(() => {
        running.delete(r);
        loop(every, round);
      });
    }, every);
    t.unref();
    timers.add(t);
  };
  loop(DURABLE_EVERY_MS, async () => {
    await sync();
    await record();
  });
  if (p.boot !== undefined) loop(CACHED_EVERY_MS, record);

  const stop = async (): Promise<void> => {
    stopped = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    await Promise.all(running);
    await chain;
  };
  return {
    // No round may outlive the download: a late journal would reappear beside a committed blob.
    stop,
    final: async () => {
      await stop();
      await sync();
      await record();
    },
  };
}
