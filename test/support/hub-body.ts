import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { head, sendError, type Exchange } from './hub-http.js';
import type { BlobFaults } from './hub-types.js';

export interface BlobSource {
  /** Key for faults and bytesServed: sha256 for LFS blobs, repo path for plain files. */
  key: string;
  content: Buffer;
  /** ETag, content type and the like; range and length headers are added here. */
  headers: OutgoingHttpHeaders;
  host: 'hub' | 'cdn';
}

export interface BodyEnv {
  faults: Map<string, BlobFaults>;
  countBytes(key: string, n: number): void;
}

type ByteRange = { kind: 'none' } | { kind: 'range'; start: number; end: number } | { kind: 'unsatisfiable' };

const NONE: ByteRange = { kind: 'none' };
const GARBAGE = Buffer.alloc(64 * 1024, 'GARBAGE!');

/** One range of one unit; anything else (multiple ranges, bad syntax) is ignored, as RFC 9110 allows. */
export function parseRange(header: string | undefined, total: number): ByteRange {
  const m = header === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return NONE;
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return NONE;
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0 || total === 0) return { kind: 'unsatisfiable' };
    return { kind: 'range', start: Math.max(0, total - suffix), end: total };
  }
  const start = Number(a);
  if (b !== '' && Number(b) < start) return NONE;
  if (start >= total) return { kind: 'unsatisfiable' };
  return { kind: 'range', start, end: b === '' ? total : Math.min(total, Number(b) + 1) };
}

function take(counter: { times: number } | undefined): boolean {
  if (!counter || counter.times <= 0) return false;
  counter.times--;
  return true;
}

function refuse(ex: Exchange, host: 'hub' | 'cdn', status: number, message: string, headers: OutgoingHttpHeaders = {}): void {
  if (host === 'hub') {
    sendError(ex, { status, message, headers });
    return;
  }
  // CloudFront/S3 answer errors in XML, not the Hub's JSON.
  const body = Buffer.from(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${status === 403 ? 'AccessDenied' : 'Error'}</Code><Message>${message}</Message></Error>`);
  head(ex, status, { 'content-type': 'application/xml', 'content-length': body.length, ...headers });
  ex.res.end(body);
}

/** Serves `src` for GET/HEAD with Range support, applying the faults registered for its key. */
export function serveBlob(ex: Exchange, src: BlobSource, env: BodyEnv): void {
  const f = env.faults.get(src.key);
  if (src.host === 'cdn' && take(f?.cdnExpire)) return refuse(ex, 'cdn', 403, 'Request has expired');
  if (f?.status503 !== undefined && f.status503 > 0) {
    f.status503--;
    return refuse(ex, src.host, 503, 'Service Unavailable');
  }
  if (f?.rateLimit && take(f.rateLimit)) {
    const secs = /^\d+$/.test(f.rateLimit.retryAfter) ? f.rateLimit.retryAfter : '60';
    return refuse(ex, src.host, 429, 'Too Many Requests', {
      'retry-after': f.rateLimit.retryAfter,
      ratelimit: `"resolvers";r=0;t=${secs}`,
      'ratelimit-policy': '"fixed window";"resolvers";q=3000;w=300',
    });
  }

  // A file shorter than what was said about it: every answer (ranges, totals) is about the short one.
  const content = f?.truncateBy ? src.content.subarray(0, Math.max(0, src.content.length - f.truncateBy)) : src.content;
  const total = content.length;
  const sizeless = f?.noLength === true || f?.endlessBody === true;
  const range = f?.ignoreRange ? NONE : parseRange(ex.req.headers.range, total);
  const headers: OutgoingHttpHeaders = { ...src.headers, 'accept-ranges': 'bytes' };
  if (range.kind === 'unsatisfiable') {
    head(ex, 416, { ...headers, 'content-range': `bytes */${total}`, 'content-length': 0 });
    ex.res.end();
    return;
  }
  let start = 0;
  let end = total;
  let status = 200;
  if (range.kind === 'range') {
    status = 206;
    ({ start, end } = range);
    if (f?.wrongContentRange && (start > 0 || total > 1) && take(f.wrongContentRange)) {
      // Same length elsewhere in the file; the header matches the bytes sent, not the request.
      [start, end] = start > 0 ? [0, end - start] : [1, Math.min(total, end + 1)];
    }
    headers['content-range'] = f?.contentRange ?? `bytes ${start}-${end - 1}/${sizeless ? '*' : total}`;
  }
  const len = end - start;
  const declared = len + (f?.contentLengthDelta ?? 0);

  if (ex.req.method === 'HEAD') {
    head(ex, status, sizeless ? headers : { ...headers, 'content-length': declared });
    ex.res.end();
    return;
  }

  const longer = take(f?.longerBody);
  // Without Content-Length Node sends chunked, which is what lets the body run past the size.
  if (!longer && !sizeless) headers['content-length'] = declared;
  let limit = len;
  let finish: Finish = 'end';
  if (f?.cutAfterBytes && f.cutAfterBytes.bytes < len && take(f.cutAfterBytes)) {
    [limit, finish] = [f.cutAfterBytes.bytes, 'destroy'];
  } else if (f?.stallAfterBytes && f.stallAfterBytes.bytes < len && take(f.stallAfterBytes)) {
    [limit, finish] = [f.stallAfterBytes.bytes, 'stall'];
  } else if (len > 0 && take(f?.shorterBody)) {
    [limit, finish] = [Math.floor(len / 2), 'fin'];
  } else if (f?.stallAtOffset && covers(f.stallAtOffset.offset, start, end) && take(f.stallAtOffset)) {
    [limit, finish] = [f.stallAtOffset.offset - start, 'stall'];
  } else if (f?.cutAtOffset && covers(f.cutAtOffset.offset, start, end) && take(f.cutAtOffset)) {
    [limit, finish] = [f.cutAtOffset.offset - start, 'destroy'];
  }
  const flip = f?.flipByteAt;
  const flipAt = flip && flip.offset >= start && flip.offset < start + limit && take(flip) ? flip.offset : undefined;

  head(ex, status, headers);
  const plan: PumpPlan = { start, stop: start + limit, flipAt, extra: f?.endlessBody ? Infinity : longer ? GARBAGE.length : 0, finish };
  if (f?.bytesPerSecond !== undefined) plan.rate = f.bytesPerSecond;
  pump(ex, { ...src, content }, env, plan).catch(() => ex.req.socket.destroy());
}

/** Whether a response for [start, end) reaches file offset `at` (with at least one byte before it, so it is a cut, not a refusal). */
function covers(at: number, start: number, end: number): boolean {
  return at > start && at < end;
}

type Finish = 'end' | 'destroy' | 'fin' | 'stall';

interface PumpPlan {
  start: number;
  stop: number;
  flipAt: number | undefined;
  extra: number;
  finish: Finish;
  rate?: number;
}

/** Resolves true when `start` reports success, false as soon as the response closes. */
function untilClosed(
  res: ServerResponse,
  state: { closed: boolean },
  start: (done: (ok: boolean) => void) => (() => void) | undefined,
): Promise<boolean> {
  return new Promise((resolve) => {
    // 'close' fires once; a response that already closed would never wake us.
    if (state.closed) return resolve(false);
    // `start` may settle before it returns its cleanup, so the cleanup goes in a holder.
    const held: { settled: boolean; cleanup?: (() => void) | undefined } = { settled: false };
    const settle = (ok: boolean): void => {
      if (held.settled) return;
      held.settled = true;
      res.off('close', onClose);
      held.cleanup?.();
      resolve(ok);
    };
    const onClose = (): void => settle(false);
    res.on('close', onClose);
    const cleanup = start(settle);
    if (held.settled) cleanup?.();
    else held.cleanup = cleanup;
  });
}

async function pump(ex: Exchange, src: BlobSource, env: BodyEnv, plan: PumpPlan): Promise<void> {
  const { res } = ex;
  const state = { closed: false };
  res.once('close', () => (state.closed = true));
  // Paced responses send a slice every ~50 ms; others go in 1 MiB writes, one in flight at a
  // time, which both respects backpressure and makes "sent" mean "handed to the kernel".
  const step = plan.rate !== undefined ? Math.max(1, Math.floor(plan.rate / 20)) : 1 << 20;
  const send = async (chunk: Buffer, last = false): Promise<boolean> => {
    const ok = await untilClosed(res, state, (done) => {
      res.write(chunk, (err) => done(!err));
      return undefined;
    });
    if (ok) env.countBytes(src.key, chunk.length);
    if (ok && last) ex.lastByteSent?.();
    if (ok && plan.rate !== undefined) {
      const ms = (chunk.length / plan.rate) * 1000;
      return untilClosed(res, state, (done) => {
        const t = setTimeout(() => done(true), ms);
        return () => clearTimeout(t);
      });
    }
    return ok;
  };

  for (let pos = plan.start; pos < plan.stop; ) {
    const n = Math.min(step, plan.stop - pos);
    let chunk = src.content.subarray(pos, pos + n);
    if (plan.flipAt !== undefined && plan.flipAt >= pos && plan.flipAt < pos + n) {
      chunk = Buffer.from(chunk);
      const i = plan.flipAt - pos;
      chunk[i] = (chunk[i] ?? 0) ^ 0xff;
    }
    if (!(await send(chunk, pos + n >= plan.stop && plan.extra === 0 && plan.finish === 'end'))) return;
    pos += n;
  }
  for (let sent = 0; sent < plan.extra; ) {
    const n = Math.min(step, plan.extra - sent);
    if (!(await send(GARBAGE.subarray(0, n)))) return;
    sent += n;
  }
  if (state.closed) return;
  switch (plan.finish) {
    case 'end':
      res.end();
      break;
    case 'destroy':
      ex.req.socket.destroy();
      break;
    case 'fin':
      ex.req.socket.end();
      break;
    case 'stall':
      // Nothing more is sent; the socket stays open until the client or close() ends it.
      break;
  }
}
