import type net from 'node:net';
import { ModelsyncError } from '../errors.js';
import { redactUrl } from '../redact.js';
import type { BodyReader } from './body-reader.js';
import { ChunkedDecoder } from './chunked-decoder.js';
import { connect, type Connected } from './connect.js';
import { networkError } from './network-error.js';
import { ReceiveBuffers, type Half } from './receive-buffers.js';
import type { ResponseHead } from './response-head.js';
import { takeHead } from './take-head.js';
import type { ProxyEndpoint } from '../proxy/proxy-settings.js';

/**
 * A waiting consumer gets a part-filled block after this long: on a slow link a block takes
 * seconds to fill, and bytes held in memory are neither on disk nor in the resume journal.
 */
const FLUSH_MS = 50;
/** An error page is read to its end (keeping the connection) only when it is this short. */
const DISCARD_LIMIT = 64 * 1024;

/** One request, as a connection sends it: a GET, or a POST with a short body (the Hub's paths-info). */
export interface WireRequest {
  readonly url: URL;
  /** GET unless told; a POST carries `body` (content-length is set here). */
  readonly method?: 'GET' | 'POST' | undefined;
  readonly body?: Buffer | undefined;
  /** Lower-case names; values must not hold CR or LF (wireRequest checks). */
  readonly headers: Readonly<Record<string, string>>;
  readonly idleTimeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** The proxy to go through (undefined: direct); the caller has applied NO_PROXY. */
  readonly proxy?: ProxyEndpoint | undefined;
}

/** A failure on a kept-alive connection before any byte of the answer: the server had closed it. */
export class StaleConnection extends Error {}

type Phase = 'idle' | 'head' | 'body' | 'done' | 'dead';

/**
 * One HTTP/1.1 connection, one GET at a time. node:http and undici hand over each socket read in
 * a new Buffer; here reads land (`onread`) in the connection's two receive buffers, handed to the
 * consumer in turn: ~0.35 CPU-s per GiB on loopback instead of ~1.1, and fixed memory.
 */
export class WireConn {
  private readonly socket: net.Socket;
  private phase: Phase = 'idle';
  /** Opened by preconnect, before any request wanted it. */
  private ahead = false;
  private url: URL;
  private head: ResponseHead | undefined;
  private remaining = 0;
  private chunked: ChunkedDecoder | undefined;
  private paused = false;
  private error: Error | undefined;
  private gotBytes = false;
  /** False once the server closed, reset or overran this exchange: never reuse the connection. */
  private reusable = true;
  private exchanges = 0;
  private timer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private idleMs = 0;
  private wake: (() => void) | undefined;
  private detachSignal: (() => void) | undefined;

  /** Read bytes a 'data' event brought that did not fit yet (the socket is paused meanwhile). */
  private pending: Buffer | undefined;

  /**
   * A connection to the URL's origin, directly or through `proxy`. `release` gets it back when
   * an exchange ended cleanly and it may be reused.
   */
  static async open(url: URL, proxy: ProxyEndpoint | undefined, release: (c: WireConn) => void, died: (c: WireConn) => void, opts: { timeoutMs: number; signal?: AbortSignal | undefined; receiveBlockSize: number }): Promise<WireConn> {
    const bufs = new ReceiveBuffers(opts.receiveBlockSize);
    const self: { conn?: WireConn } = {};
    // Reads start only after our first request is written, by when `conn` is set.
    const onread = { buffer: () => bufs.space(), callback: (n: number, landed: Uint8Array) => self.conn?.onRead(n, landed) ?? false };
    self.conn = new WireConn(url, await connect(url, onread, proxy, opts), bufs, release, died);
    return self.conn;
  }

  private constructor(
    url: URL,
    private readonly link: Connected,
    private readonly bufs: ReceiveBuffers,
    private readonly release: (c: WireConn) => void,
    private readonly died: (c: WireConn) => void,
  ) {
    this.url = url;
    this.socket = link.socket;
    if (!link.onreadHonoured) this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('error', (e) => this.lost(this.stale(e) ?? networkError(e, this.url)));
    this.socket.on('end', () => this.onEnd());
    this.socket.on('close', () => this.lost(this.stale(undefined) ?? this.err('E_NETWORK', `connection to ${this.url.host} closed`)));
  }

  get alive(): boolean {
    return this.phase === 'idle' && !this.socket.destroyed;
  }

  /** Send the request and resolve with the response head and a reader for its body. */
  async exchange(req: WireRequest): Promise<{ head: ResponseHead; body: BodyReader }> {
    this.url = req.url;
    const id = ++this.exchanges;
    this.phase = 'head';
    this.head = undefined;
    this.error = undefined;
    this.gotBytes = false;
    this.reusable = true;
    this.idleMs = req.idleTimeoutMs;
    this.socket.ref();
    const target = this.link.absoluteForm ? `${req.url.protocol}//${req.url.host}${req.url.pathname}${req.url.search}` : `${req.url.pathname}${req.url.search}`;
    const lines = [`${req.method ?? 'GET'} ${target} HTTP/1.1`, `host: ${req.url.host}`];
    for (const [k, v] of Object.entries(req.headers)) lines.push(`${k}: ${v}`);
    if (req.method === 'POST') lines.push(`content-length: ${req.body?.length ?? 0}`);
    if (this.link.absoluteForm && this.link.proxy?.authorization !== undefined) lines.push(`proxy-authorization: ${this.link.proxy.authorization}`);
    this.socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
    if (req.method === 'POST' && req.body !== undefined && req.body.length > 0) this.socket.write(req.body);
    this.armTimer();
    this.resume();
    if (req.signal) this.listen(req.signal);
    while (this.head === undefined) {
      if (this.error) throw this.error;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    return { head: this.head, body: this.reader(id) };
  }

  destroy(): void {
    this.fail(this.err('E_ABORTED', 'connection closed'));
  }

  private listen(signal: AbortSignal): void {
    const onAbort = (): void => this.fail(new ModelsyncError('E_ABORTED', `request to ${this.url.host} aborted`, { url: redactUrl(this.url), cause: signal.reason }));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    this.detachSignal = () => signal.removeEventListener('abort', onAbort);
  }

  private reader(id: number): BodyReader {
    const mine = (): boolean => this.exchanges === id && (this.phase === 'body' || this.phase === 'done' || this.phase === 'dead');
    return {
      next: () => (mine() ? this.next() : Promise.resolve(null)),
      destroy: () => {
        if (mine() && this.phase !== 'dead') this.finish(this.phase === 'done');
      },
      discard: () => {
        if (!mine() || this.phase === 'dead') return;
        const f = this.head?.framing;
        if (f?.kind !== 'length' || f.length > DISCARD_LIMIT) return this.finish(false);
        void this.next().then(
          (b) => (b === null ? undefined : this.finish(this.phase === 'done')),
          () => undefined,
        );
      },
    };
  }

  /**
   * The next block. Bytes that arrived before a cut or a timeout are still handed out before the
   * error: they are good bytes, and the chunk engine resumes right after them.
   */
  private async next(): Promise<Buffer | null> {
    if (this.bufs.holding) {
      this.bufs.giveBack();
      // The socket waited for room, and now there is some.
      if (this.paused && this.phase === 'body' && this.bufs.rotate()) {
        this.decode(this.bufs.current);
        if (!this.ended()) this.resume();
      }
    }
    for (;;) {
      const block = this.bufs.take(this.phase !== 'body');
      if (block) return block;
      if (this.error) throw this.error;
      if (this.phase === 'done') {
        this.finish(true);
        return null;
      }
      this.armFlush();
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** While the consumer waits, hand it what the receiving half holds within FLUSH_MS. */
  private armFlush(): void {
    if (this.flushTimer !== undefined || this.phase !== 'body' || this.bufs.current.out === this.bufs.current.start) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      if (this.wake === undefined || this.phase !== 'body' || !this.bufs.rotate()) return;
      this.decode(this.bufs.current);
      this.notify();
    }, FLUSH_MS);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** The end of an exchange: keep the connection for the next one, or close it. */
  private finish(clean: boolean): void {
    this.clearTimer();
    this.detachSignal?.();
    this.detachSignal = undefined;
    if (!clean || this.phase !== 'done' || this.head?.keepAlive !== true || !this.reusable || this.socket.destroyed) {
      this.phase = 'dead';
      this.socket.destroy();
      this.died(this);
      return;
    }
    this.bufs.reset();
    this.phase = 'idle';
    // Reading on while idle is how a server's close (or stray bytes) is noticed before reuse.
    this.resume();
    this.socket.unref();
    this.release(this);
  }

  /**
   * Reads that come as 'data' events (TLS inside a tunnel): copied into the receive buffers as
   * if they had landed there; what does not fit waits in `pending` while the socket is paused.
   */
  private onData(d: Buffer): void {
    let rest = d;
    while (rest.length > 0) {
      const space = this.bufs.space();
      const n = Math.min(space.length, rest.length);
      rest.copy(space, 0, 0, n);
      rest = rest.subarray(n);
      if (!this.onRead(n, space)) {
        if (this.phase !== 'dead' && rest.length > 0) this.pending = rest;
        this.socket.pause();
        return;
      }
    }
  }

  private onRead(n: number, landed: Uint8Array): boolean {
    if (!this.bufs.landed(n, landed)) {
      this.fail(new Error(`wire: ${n} bytes read with no room for them`));
      return false;
    }
    this.timer?.refresh();
    if (this.phase === 'head') {
      this.gotBytes = true;
      this.parseHead(this.bufs.current);
    } else if (this.phase === 'body') {
      this.decode(this.bufs.current);
    } else {
      // Bytes nobody asked for (idle, or after a complete body): the stream is out of step.
      this.fail(this.err('E_NETWORK', `${this.url.host} sent bytes outside a response`));
    }
    if (this.error) return false;
    if (this.ended()) return this.stopReading();
    if (this.wake !== undefined) this.armFlush();
    if (this.phase !== 'body' || this.bufs.roomy()) return true;
    if (!this.bufs.rotate()) return this.stopReading();
    this.notify();
    this.decode(this.bufs.current);
    return this.ended() ? this.stopReading() : true;
  }

  /** Pause the socket until the consumer makes room (or, at the end of a body, until reuse). */
  private stopReading(): false {
    this.paused = true;
    this.clearTimer();
    this.notify();
    return false;
  }

  /** A method, so the compiler does not narrow `phase` across calls that change it. */
  private ended(): boolean {
    return this.phase === 'done';
  }

  private parseHead(h: Half): void {
    const head = takeHead(h);
    if (head === undefined) return;
    if (typeof head === 'string') return this.fail(this.err('E_NETWORK', `${this.url.host}: ${head}`));
    this.head = head;
    this.phase = 'body';
    this.chunked = head.framing.kind === 'chunked' ? new ChunkedDecoder() : undefined;
    this.remaining = head.framing.kind === 'length' ? head.framing.length : Number.MAX_SAFE_INTEGER;
    if (this.remaining === 0) this.bodyEnded(h);
    else this.decode(h);
    this.notify();
  }

  private decode(h: Half): void {
    if (this.phase !== 'body') return;
    if (this.chunked) {
      const r = this.chunked.decode(h.buf, h.scan, h.fill, h.out);
      if (typeof r === 'string') return this.fail(this.err('E_NETWORK', `${this.url.host}: bad chunked body (${r})`));
      h.scan = r.scan;
      h.out = r.out;
      if (r.ended) this.bodyEnded(h);
      return;
    }
    const take = Math.min(this.remaining, h.fill - h.scan);
    h.scan += take;
    h.out = h.scan;
    this.remaining -= take;
    if (this.remaining === 0) this.bodyEnded(h);
  }

  private bodyEnded(h: Half): void {
    this.phase = 'done';
    // More than the framing said: never hand it out, never reuse this connection.
    if (h.fill > h.scan) this.reusable = false;
    h.fill = h.scan;
  }

  private onEnd(): void {
    if (this.phase === 'body' && this.head?.framing.kind === 'close') {
      this.phase = 'done';
      this.reusable = false;
      this.notify();
      return;
    }
    const f = this.head?.framing;
    const where = this.phase !== 'body' ? 'before answering' : f?.kind === 'length' ? `after ${f.length - this.remaining} of ${f.length} body bytes` : 'in the middle of a chunked body';
    const e = this.err('E_NETWORK', `${this.url.host} closed the connection ${where}`);
    this.lost(this.stale(e) ?? e);
  }

  /** The socket failed or closed. A body already received in full is still good to hand out. */
  private lost(e: Error): void {
    if (this.phase === 'done') {
      this.reusable = false;
      return;
    }
    this.fail(e);
  }

  /**
   * Opened ahead of its first request (preconnect.ts) and left idle: it must not hold the
   * process open, and its first exchange counts as a reuse (a server may close an unused
   * connection just as it closes a kept-alive one).
   */
  parkFresh(): void {
    this.ahead = true;
    this.socket.unref();
  }

  /** A reused connection that fails before its first byte only tells us the server closed it. */
  private stale(cause: unknown): StaleConnection | undefined {
    return this.phase === 'head' && !this.gotBytes && this.exchanges > (this.ahead ? 0 : 1) ? new StaleConnection('kept-alive connection was closed', { cause }) : undefined;
  }

  private err(code: 'E_NETWORK' | 'E_TIMEOUT' | 'E_ABORTED', message: string): ModelsyncError {
    return new ModelsyncError(code, message, { url: redactUrl(this.url), retryable: code !== 'E_ABORTED' });
  }

  private fail(e: Error): void {
    if (this.phase === 'dead') return;
    const active = this.phase === 'head' || this.phase === 'body' || (this.phase === 'done' && this.bufs.holding);
    this.clearTimer();
    this.detachSignal?.();
    this.detachSignal = undefined;
    this.phase = 'dead';
    this.socket.destroy();
    this.died(this);
    if (active || this.wake) {
      this.error = e;
      this.notify();
    }
  }

  private armTimer(): void {
    if (this.timer) this.timer.refresh();
    else this.timer = setTimeout(() => this.fail(this.err('E_TIMEOUT', `no data from ${this.url.host} for ${this.idleMs} ms`)), this.idleMs);
  }

  private clearTimer(): void {
    clearTimeout(this.timer);
    clearTimeout(this.flushTimer);
    this.timer = this.flushTimer = undefined;
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.phase === 'head' || this.phase === 'body') this.armTimer();
    const held = this.pending;
    this.pending = undefined;
    if (held !== undefined) {
      this.onData(held);
      if (this.paused) return;
    }
    this.socket.resume();
  }
}
