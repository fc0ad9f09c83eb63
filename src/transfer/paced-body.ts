import { Readable } from 'node:stream';
import type { RateFloor } from './rate-floor.js';

/** Small enough that the count follows the socket closely, large enough to cost nothing. */
const SLICE = 64 * 1024;

/**
 * An upload's request body, handed to the HTTP request a slice at a time and counted into a
 * RateFloor as it is taken. Piped into the request, it is read only as fast as the socket
 * drains (backpressure), so the count is the server's pace, within the socket's buffers: the
 * SDK would otherwise write the whole Buffer at once, and no count could tell a server that
 * reads in bursts just inside the idle timeout from a fast one.
 *
 * The floor runs from the first slice taken to the last: once the whole body is with the
 * socket, every window would count nothing while the server works on its answer, and that wait
 * is the idle timeout's business. When the floor trips, the request the body is piped into is
 * destroyed with the floor's error, so its socket is freed at once and the error is what the
 * send rejects with (lib-storage's abort() does not reach a request in flight).
 */
export class PacedBody extends Readable {
  private offset = 0;
  private sink: NodeJS.WritableStream | undefined;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly floor: RateFloor,
    private readonly host: string,
  ) {
    super();
    floor.signal.addEventListener('abort', () => this.cut(), { once: true });
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    this.sink = destination;
    return super.pipe(destination, options);
  }

  override _read(): void {
    if (this.offset === 0) this.floor.start(this.host, 'took');
    const end = Math.min(this.offset + SLICE, this.bytes.byteLength);
    const slice = Buffer.from(this.bytes.buffer, this.bytes.byteOffset + this.offset, end - this.offset);
    this.offset = end;
    this.floor.count(slice.byteLength);
    this.push(slice);
    if (end === this.bytes.byteLength) {
      this.floor.stop();
      this.push(null);
    }
  }

  private cut(): void {
    const why = this.floor.tripped;
    if (why === undefined) return;
    const sink = this.sink as { destroy?: (e: Error) => void } | undefined;
    sink?.destroy?.(why);
    // Without an error: nothing listens for one on the body, and the request carries it.
    this.destroy();
  }
}
