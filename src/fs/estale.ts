import { systemClock, type Clock } from '../clock.js';
import { errnoCode } from '../errors.js';

/**
 * errno codes a network file system returns for a moment and then not: ESTALE when the file
 * handle we hold (or the client cached for a name) was replaced on the server by another node's
 * rename; EIO/ETIMEDOUT from a soft mount whose server was briefly unreachable; EAGAIN/EINTR.
 * ENOENT is an answer, not a transient error, and is never retried here.
 */
const TRANSIENT = new Set(['ESTALE', 'EIO', 'ETIMEDOUT', 'EAGAIN', 'EINTR']);

export function isTransientFsError(e: unknown): boolean {
  return TRANSIENT.has(errnoCode(e) ?? '');
}

export interface ReopenOptions {
  /** Tries in all, the first included. */
  readonly attempts?: number;
  readonly baseMs?: number;
  readonly clock?: Clock;
}

/**
 * Run a store read again on a transient network file system error. `op` must open what it reads
 * by path each time it is called: a new open makes the client look the name up again and get a
 * fresh file handle, which is the only cure for ESTALE (a handle is never valid again).
 */
export async function withReopen<T>(op: () => Promise<T>, opts: ReopenOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 4;
  const clock = opts.clock ?? systemClock;
  let wait = opts.baseMs ?? 50;
  for (let i = 1; ; i++) {
    try {
      return await op();
    } catch (e) {
      if (i >= attempts || !isTransientFsError(e)) throw e;
      await clock.sleep(wait);
      wait = Math.min(wait * 2, 1000);
    }
  }
}
