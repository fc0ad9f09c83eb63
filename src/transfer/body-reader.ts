import type { Readable } from 'node:stream';

/**
 * A response body, read a block at a time. A block is a view into a buffer the reader owns and
 * reuses: it stays valid until the next call to `next()` or `destroy()`, so a consumer writes or
 * hashes it before asking for more. That contract is what lets the transport land bytes from the
 * socket straight in a buffer that is then written to disk, with no allocation per read.
 */
export interface BodyReader {
  /** The next block, or null once the body has ended. Rejects on a cut, a timeout or an abort. */
  next(): Promise<Buffer | null>;
  /** Done with this body, read or not. An unfinished body's connection is closed, never reused. */
  destroy(): void;
  /** Read and drop the rest if it is short (an error page), so the connection can be reused. */
  discard(): void;
}

/** Blocks of at most this size from a stream: one disk write each instead of one per socket read. */
const STREAM_BLOCK = 512 * 1024;

/** A Node stream (the AWS SDK's body) as a BodyReader, its chunks gathered into one reused buffer. */
export function readableBody(stream: Readable): BodyReader {
  const it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  const block = Buffer.allocUnsafe(STREAM_BLOCK);
  let rest: Buffer | undefined;
  let ended = false;
  return {
    async next() {
      let n = 0;
      while (n < block.length) {
        if (rest === undefined) {
          if (ended) break;
          const r = await it.next();
          if (r.done === true) {
            ended = true;
            break;
          }
          rest = r.value;
        }
        const took = rest.copy(block, n);
        n += took;
        rest = took < rest.length ? rest.subarray(took) : undefined;
      }
      return n === 0 ? null : block.subarray(0, n);
    },
    destroy() {
      ended = true;
      stream.destroy();
    },
    discard() {
      ended = true;
      stream.resume();
    },
  };
}
