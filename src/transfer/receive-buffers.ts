/** A half with less room than this is sealed, so that no socket read is starved into slivers. */
const MIN_READ = 64 * 1024;
/** Smallest and largest block: one positional write each. */
const MIN_BLOCK = 2 * MIN_READ;
const MAX_BLOCK = 512 * 1024;
/** Receive memory of all connections together: 32 x 2 x 256 KiB, or 16 x 2 x 512 KiB. */
const RECEIVE_MEMORY = 16 * 1024 * 1024;

/**
 * Block size for a connection budget (transfer/budget.ts). On loopback 512 KiB blocks cost ~10 %
 * less CPU than 256 KiB, but past 16 connections two of them per connection are most of the
 * process's memory, and a link shared by that many connections gives each less than a block needs.
 */
export function receiveBlockSize(connections: number): number {
  return Math.max(MIN_BLOCK, Math.min(MAX_BLOCK, 2 ** Math.floor(Math.log2(RECEIVE_MEMORY / (2 * Math.max(1, connections))))));
}

/**
 * One of the two buffers. Bytes [start, out) are body bytes not yet handed out; [scan, fill)
 * are raw bytes not yet decoded (chunk framing, a response head); `fill` is where the socket
 * writes next. In a length-framed body out == scan.
 */
export interface Half {
  readonly buf: Buffer;
  start: number;
  out: number;
  scan: number;
  fill: number;
  state: 'recv' | 'ready' | 'held';
}

function clear(h: Half): void {
  h.state = 'recv';
  h.start = h.out = h.scan = h.fill = 0;
}

/**
 * A connection's two receive buffers, dealt in turn: the socket reads into the current one while
 * the consumer holds the other; when neither is free, the socket has to wait. Blocks handed out
 * are views into these buffers, so nothing is allocated per read.
 */
export class ReceiveBuffers {
  private readonly halves: [Half, Half];
  private cur: 0 | 1 = 0;
  private readonly ready: Half[] = [];
  private held: Half | undefined;
  private scratch: Buffer | undefined;

  constructor(block: number) {
    const mk = (): Half => ({ buf: Buffer.allocUnsafeSlow(block), start: 0, out: 0, scan: 0, fill: 0, state: 'recv' });
    this.halves = [mk(), mk()];
  }

  /** The half the socket reads into; its bytes are decoded in place. */
  get current(): Half {
    return this.halves[this.cur];
  }

  get holding(): boolean {
    return this.held !== undefined;
  }

  /**
   * Where the socket's next read lands. Node asks for it right after each read's callback, so a
   * read after a pause, or on a kept-alive connection, lands where things stood back then, and
   * `landed` moves it into place. That region is past the data of its half, which stays intact.
   */
  space(): Buffer {
    const h = this.current;
    if (h.fill < h.buf.length) return h.buf.subarray(h.fill);
    this.scratch ??= Buffer.allocUnsafeSlow(MIN_READ);
    return this.scratch;
  }

  /** Account for `n` bytes the socket read into `landed`. False when they do not fit (a bug). */
  landed(n: number, landed: Uint8Array): boolean {
    const h = this.current;
    if (landed.buffer !== h.buf.buffer || landed.byteOffset - h.buf.byteOffset !== h.fill) {
      if (h.buf.length - h.fill < n) return false;
      // TypedArray#set copies as if through a temporary, so overlapping regions are fine.
      h.buf.set(landed.subarray(0, n), h.fill);
    }
    h.fill += n;
    return true;
  }

  /** Whether the current half still has room for a full read. */
  roomy(): boolean {
    const h = this.current;
    return h.buf.length - h.fill >= MIN_READ;
  }

  /**
   * Seal the current half for the consumer and make the other one current, carrying over the
   * undecoded tail. False when the other half is still out: the socket must wait.
   */
  rotate(): boolean {
    const next: 0 | 1 = this.cur === 0 ? 1 : 0;
    const h = this.current;
    const to = this.halves[next];
    if (to.state !== 'recv' || to.fill !== 0) return false;
    const tail = h.fill - h.scan;
    if (tail > 0) h.buf.copy(to.buf, 0, h.scan, h.fill);
    to.start = to.out = to.scan = 0;
    to.fill = tail;
    h.fill = h.scan;
    if (h.out > h.start) {
      h.state = 'ready';
      this.ready.push(h);
    } else clear(h);
    this.cur = next;
    return true;
  }

  /** Whether a sealed block waits to be handed out. */
  get hasReady(): boolean {
    return this.ready.length > 0;
  }

  /**
   * Hand out the next sealed block; with `all` (the body has ended or broken), also the decoded
   * bytes of the current half. The view stays valid until `giveBack`.
   */
  take(all: boolean): Buffer | undefined {
    let h = this.ready.shift();
    if (h === undefined && all) {
      const c = this.current;
      if (c.out > c.start && c.state === 'recv') h = c;
    }
    if (h === undefined) return undefined;
    h.state = 'held';
    this.held = h;
    return h.buf.subarray(h.start, h.out);
  }

  /** The consumer is done with the block it holds. */
  giveBack(): void {
    if (this.held) clear(this.held);
    this.held = undefined;
  }

  reset(): void {
    clear(this.halves[0]);
    clear(this.halves[1]);
    this.ready.length = 0;
    this.held = undefined;
    this.cur = 0;
  }
}
