import type { ServerResponse } from 'node:http';

/**
 * Orders two concurrent Hub API answers: `split`'s head goes out, then `inside`'s whole answer,
 * then `split`'s body, with `gapMs` between the steps so that a client not stalled meanwhile
 * reads them in that order too (the server cannot see when the client has read a head). The
 * order of the answers is certain; the gaps only make a client race on them likely to show.
 */
export interface ApiInterleave {
  /** Repo id ("org/name") whose answer is split around the other's. */
  readonly split: string;
  /** Repo id answered whole between the other's head and body. */
  readonly inside: string;
  readonly gapMs: number;
}

/** One interleaving per ApiInterleave object: assign a new one to interleave again. */
export class Interleaver {
  private readonly runs = new WeakMap<ApiInterleave, { splitHead: Deferred; insideDone: Deferred }>();

  /** Before `inside` is answered: wait for `split`'s head. Wraps `split`'s response. */
  async around(repoId: string, order: ApiInterleave | undefined, res: ServerResponse): Promise<void> {
    if (order === undefined) return;
    let run = this.runs.get(order);
    if (!run) this.runs.set(order, (run = { splitHead: deferred(), insideDone: deferred() }));
    const { splitHead, insideDone } = run;
    if (repoId === order.inside) {
      res.once('finish', () => insideDone.resolve());
      await splitHead.promise;
      await sleep(order.gapMs);
      return;
    }
    if (repoId !== order.split) return;
    const end = res.end.bind(res) as (chunk?: unknown) => ServerResponse;
    res.end = ((chunk?: unknown) => {
      res.flushHeaders();
      splitHead.resolve();
      void insideDone.promise.then(() => sleep(order.gapMs)).then(() => end(chunk));
      return res;
    }) as typeof res.end;
  }
}

interface Deferred {
  readonly promise: Promise<void>;
  resolve(): void;
}

function deferred(): Deferred {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
