/**
 * Every parser of a remote answer in src/transfer and src/sources but paths-info (its own file):
 * Content-Range and Content-Length (the HTTP client's and S3's), the Hub's resolve headers,
 * Retry-After, the response head and the chunked decoder of our HTTP/1.1 client. Properties over
 * arbitrary input (fast-check, fixed seeds), then the counter-examples fast-check shrank to against
 * the parsers before issue 13, kept as fixed cases.
 */
import type { IncomingHttpHeaders } from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ModelsyncError } from '../src/errors.js';
import { readResolveHeaders } from '../src/sources/hf-resolve-headers.js';
import { bodyFromResponse } from '../src/sources/http-body.js';
import type { BodyReader } from '../src/transfer/body-reader.js';
import { ChunkedDecoder } from '../src/transfer/chunked-decoder.js';
import { parseContentLength, parseContentRange } from '../src/transfer/content-range.js';
import { parseRetryAfter, type HttpResponse } from '../src/transfer/http.js';
import { parseResponseHead } from '../src/transfer/response-head.js';

const RUNS = { numRuns: 5000, seed: 13 };
const noBody: BodyReader = { next: () => Promise.resolve(null), destroy: () => undefined, discard: () => undefined };

function answer(status: number, headers: IncomingHttpHeaders): HttpResponse {
  return { status, headers, url: 'http://127.0.0.1:9/f', hops: [], body: noBody };
}

/** What bodyFromResponse makes of a 206 with these headers: its range, or the error code. */
function ranged(contentRange: string | undefined, contentLength?: string): { start: number; end: number; total: number | undefined } | string {
  const headers: IncomingHttpHeaders = {};
  if (contentRange !== undefined) headers['content-range'] = contentRange;
  if (contentLength !== undefined) headers['content-length'] = contentLength;
  try {
    const b = bodyFromResponse(answer(206, headers));
    if (b.range === undefined) return 'no range';
    return b.range;
  } catch (e) {
    if (e instanceof ModelsyncError) return e.code;
    throw e;
  }
}

/** Text biased towards what these headers are made of. */
const headerish = fc.string({ unit: fc.constantFrom(...'bytes 0123456789-/*,=;"Wa f\tx'.split('')), maxLength: 40 });
const anyText = fc.oneof(headerish, fc.string({ maxLength: 60 }), fc.string({ unit: 'grapheme', maxLength: 20 }));
/** Numbers as a server might write them: small, huge (past 2^53), signed, fractional, in exponent form. */
const numberish = fc.oneof(fc.nat(20).map(String), fc.bigInt({ min: 0n, max: 10n ** 20n }).map(String), fc.double({ noNaN: true }).map(String), fc.integer().map(String));
const rangeText = fc.oneof(anyText, fc.tuple(numberish, numberish, fc.oneof(numberish, fc.constant('*'))).map(([a, b, c]) => `bytes ${a}-${b}/${c}`));

describe('Content-Range and Content-Length', () => {
  it('a true Content-Range reads back exactly', () => {
    fc.assert(
      fc.property(fc.nat(2 ** 48), fc.nat(2 ** 20), fc.option(fc.nat(2 ** 20), { nil: undefined }), (start, span, extra) => {
        const last = start + span;
        const total = extra === undefined ? undefined : last + 1 + extra;
        expect(parseContentRange(`bytes ${start}-${last}/${total ?? '*'}`)).toEqual({ start, end: last + 1, total });
        expect(ranged(`bytes ${start}-${last}/${total ?? '*'}`, String(span + 1))).toEqual({ start, end: last + 1, total });
      }),
      RUNS,
    );
  });

  it('out of any header text: no range, or one with start < end <= total, all exact integers; never a throw', () => {
    fc.assert(
      fc.property(rangeText, fc.option(fc.oneof(anyText, numberish), { nil: undefined }), (cr, cl) => {
        const r = ranged(cr, cl);
        if (typeof r === 'string') {
          expect(r).toBe('E_RANGE');
          return;
        }
        expect(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end)).toBe(true);
        expect(r.start).toBeGreaterThanOrEqual(0);
        expect(r.end).toBeGreaterThan(r.start);
        if (r.total !== undefined) expect(r.end).toBeLessThanOrEqual(r.total);
        const length = parseContentLength(cl);
        if (length !== undefined) expect(length).toBe(r.end - r.start);
      }),
      RUNS,
    );
  });

  it('a Content-Length is digits or nothing', () => {
    fc.assert(
      fc.property(anyText, (v) => {
        const n = parseContentLength(v);
        if (n !== undefined) {
          expect(Number.isSafeInteger(n) && n >= 0).toBe(true);
          expect(v.trim()).toMatch(/^\d+$/);
        }
      }),
      RUNS,
    );
  });

  // Against the parser before issue 13 (`/^bytes (\d+)-(\d+)\/(\d+|\*)$/`, then Number()): the
  // property shrank to the first (an end past 2^53); the others are its siblings: an inverted
  // range, a range past its total, digits past 2^53, a length that is not the range's.
  it.each([
    ['bytes 0-9007199254740991/*', undefined],
    ['bytes 1-0/2', undefined],
    ['bytes 0-0/0', undefined],
    ['bytes 0-1/1', undefined],
    ['bytes 0-99999999999999999/*', undefined],
    ['bytes 0-9/10', '5'],
    ['bytes=0-9/10', undefined],
    ['bytes 0-9/10, bytes 10-19/20', undefined],
  ])('regression: Content-Range %j with Content-Length %j is refused', (cr, cl) => {
    expect(ranged(cr, cl)).toBe('E_RANGE');
  });

  it('a 200 keeps only a Content-Length that is digits', () => {
    for (const [v, want] of [['12', 12], [' 12 ', 12], ['', undefined], ['0x10', undefined], ['1e3', undefined], ['-1', undefined], ['12, 12', undefined], ['9007199254740991', 9007199254740991], ['9007199254740993', undefined], ['12345678901234567', undefined]] as const) {
      expect(bodyFromResponse(answer(200, { 'content-length': v })).length, v).toBe(want);
    }
  });
});

describe("the Hub's resolve headers", () => {
  const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });

  it('true headers read back exactly (a quoted or bare sha256, any case)', () => {
    fc.assert(
      fc.property(hex(64), fc.boolean(), fc.boolean(), fc.nat(2 ** 52), hex(40), (sha, quoted, upper, size, commit) => {
        const etag = upper ? sha.toUpperCase() : sha;
        const r = readResolveHeaders({ 'x-linked-etag': quoted ? `"${etag}"` : etag, 'x-linked-size': String(size), 'x-repo-commit': commit });
        expect(r).toEqual({ linkedEtag: sha, linkedSize: size, repoCommit: commit });
      }),
      RUNS,
    );
  });

  it('out of any header text: a problem, or a sha256, a byte count and a commit id', () => {
    fc.assert(
      fc.property(fc.option(anyText, { nil: undefined }), fc.option(anyText, { nil: undefined }), fc.option(anyText, { nil: undefined }), (etag, size, commit) => {
        const h: IncomingHttpHeaders = {};
        if (etag !== undefined) h['x-linked-etag'] = etag;
        if (size !== undefined) h['x-linked-size'] = size;
        if (commit !== undefined) h['x-repo-commit'] = commit;
        const r = readResolveHeaders(h);
        if ('problem' in r) {
          expect(r.problem.length).toBeLessThan(200);
          return;
        }
        if (r.linkedEtag !== undefined) expect(r.linkedEtag).toMatch(/^[0-9a-f]{64}$/);
        if (r.linkedSize !== undefined) expect(Number.isSafeInteger(r.linkedSize) && r.linkedSize >= 0).toBe(true);
        if (r.repoCommit !== undefined) expect(r.repoCommit).toMatch(/^[0-9a-f]{40}$/);
      }),
      RUNS,
    );
  });

  // Before issue 13 hf.ts read X-Linked-Etag as `value.replace(/"/g, '')` and nothing else: these
  // were compared (or, for size and commit, never looked at) instead of refused.
  it.each([
    [{ 'x-linked-etag': '"../../etc/passwd"' }],
    [{ 'x-linked-etag': `W/"${'a'.repeat(64)}"` }],
    [{ 'x-linked-etag': `"${'a'.repeat(64)}` }],
    [{ 'x-linked-etag': `"${'a'.repeat(64)}", "${'b'.repeat(64)}"` }],
    [{ 'x-linked-size': '-1' }],
    [{ 'x-linked-size': '1e3' }],
    [{ 'x-repo-commit': 'main' }],
    [{ 'x-repo-commit': 'A'.repeat(40) }],
  ])('regression: %j is a problem', (h) => {
    expect(readResolveHeaders(h)).toHaveProperty('problem');
  });
});

describe('Retry-After', () => {
  const now = Date.parse('2026-12-04T00:00:00Z');

  it('delay-seconds read back exactly; an HTTP-date is the time until it, never negative', () => {
    fc.assert(
      fc.property(fc.nat(10 ** 9), fc.integer({ min: -1_000_000, max: 1_000_000 }), (secs, offset) => {
        expect(parseRetryAfter(String(secs), now)).toBe(secs * 1000);
        const at = new Date(now + offset * 1000).toUTCString();
        expect(parseRetryAfter(at, now)).toBe(Math.max(0, offset * 1000));
      }),
      RUNS,
    );
  });

  it('out of any text: a wait only from delay-seconds or an HTTP-date, in whole milliseconds >= 0; never a throw', () => {
    const dates = fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(2 ** 42) }).map((d) => d.toUTCString());
    fc.assert(
      fc.property(fc.oneof(anyText, numberish, dates), (v) => {
        const ms = parseRetryAfter(v, now);
        if (ms === undefined) return;
        expect(Number.isSafeInteger(ms) && ms >= 0).toBe(true);
        expect(/^\d+(\.\d{1,3})?$/.test(v.trim()) || /^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v.trim())).toBe(true);
      }),
      RUNS,
    );
  });

  // Against the parser before issue 13 (`Number(value)`, then `Date.parse`): the property shrank to
  // "5e-324" (a wait of 5e-321 ms); siblings: an empty header meant "retry now", hex and exponents
  // were seconds, long fractions gave fractional milliseconds, Date.parse read lone numbers as 2001.
  it.each(['5e-324', '', ' ', '0x10', '1e3', '0.0001', '+5', '5, 6', 'Infinity', '-0', '1 2'])('regression: %j tells no wait', (v) => {
    expect(parseRetryAfter(v, now)).toBeUndefined();
  });

  it('a fraction of a second, to three places, is tolerated as whole milliseconds', () => {
    expect(parseRetryAfter('1.5', now)).toBe(1500);
    expect(parseRetryAfter('0.125', now)).toBe(125);
  });

  it('the three date forms of RFC 9110', () => {
    const at = Date.parse('1994-11-06T08:49:37Z');
    for (const v of ['Sun, 06 Nov 1994 08:49:37 GMT', 'Sunday, 06-Nov-94 08:49:37 GMT', 'Sun Nov  6 08:49:37 1994']) expect(parseRetryAfter(v, at - 1000), v).toBe(1000);
  });
});

describe('the response head', () => {
  const token = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-'), minLength: 1, maxLength: 12 }).filter((n) => !['content-length', 'transfer-encoding', 'connection', 'set-cookie'].includes(n));
  const value = fc.string({ unit: fc.constantFrom(...'abcXYZ019 ;=/"-.,'.split('')), maxLength: 20 }).map((v) => v.trim());

  it('a well-formed head reads back: status, headers, and the framing Content-Length says', () => {
    fc.assert(
      fc.property(fc.integer({ min: 200, max: 599 }), fc.uniqueArray(fc.tuple(token, value), { maxLength: 6, selector: ([n]) => n }), fc.nat(2 ** 40), (status, headers, length) => {
        const text = [`HTTP/1.1 ${status} Whatever`, ...headers.map(([n, v]) => `${n}: ${v}`), `Content-Length: ${length}`].join('\r\n');
        const head = parseResponseHead(text, 'GET');
        if (typeof head === 'string') throw new Error(head);
        expect(head.status).toBe(status);
        for (const [n, v] of headers) expect(head.headers[n]).toBe(v);
        expect(head.framing).toEqual(status === 204 || status === 304 ? { kind: 'length', length: 0 } : { kind: 'length', length });
      }),
      RUNS,
    );
  });

  it('out of any text: a problem, or a head with a status of three digits and a framing of an exact length', () => {
    const line = fc.oneof(fc.constantFrom('HTTP/1.1 200 OK', 'HTTP/1.0 206 Partial', 'Content-Length: 5', 'Content-Length: 05', 'Transfer-Encoding: chunked', 'Connection: close'), fc.tuple(token, anyText).map(([n, v]) => `${n}:${v}`), anyText);
    fc.assert(
      fc.property(fc.array(line, { minLength: 1, maxLength: 6 }), (lines) => {
        const head = parseResponseHead(lines.join('\r\n'), 'GET');
        if (typeof head === 'string') return;
        expect(head.status).toBeGreaterThanOrEqual(100);
        expect(head.status).toBeLessThan(1000);
        if (head.framing.kind === 'length') expect(Number.isSafeInteger(head.framing.length) && head.framing.length >= 0).toBe(true);
      }),
      RUNS,
    );
  });

  // Shrunk by the property above against the parser before issue 13: its headers were a plain
  // object, so a header named after one of Object.prototype's keys read the prototype's value.
  it.each(['constructor', '__proto__', 'toString', 'hasOwnProperty'])('regression: a header named %j is read as sent', (name) => {
    const head = parseResponseHead(`HTTP/1.1 200 OK\r\n${name}: x\r\nContent-Length: 0`, 'GET');
    if (typeof head === 'string') throw new Error(head);
    expect(head.headers[name.toLowerCase()]).toBe('x');
  });

  it.each([
    ['a Content-Length with a sign', 'Content-Length: +5'],
    ['a Content-Length in hex', 'Content-Length: 0x5'],
    ['two Content-Lengths that differ', 'Content-Length: 5\r\nContent-Length: 6'],
    ['a Content-Length past 15 digits', `Content-Length: ${'9'.repeat(16)}`],
    ['a coding beside chunked', 'Transfer-Encoding: gzip, chunked'],
  ])('refuses %s', (_what, lines) => {
    expect(typeof parseResponseHead(`HTTP/1.1 200 OK\r\n${lines}`, 'GET')).toBe('string');
  });
});

describe('the chunked decoder', () => {
  /** The body chunked as a server might (any sizes, extensions, trailers), fed in any splits. */
  function decodeAll(raw: Buffer, cuts: number[]): { body: Buffer; ended: boolean } | string {
    const buf = Buffer.alloc(raw.length);
    const d = new ChunkedDecoder();
    let fill = 0;
    let scan = 0;
    let out = 0;
    const points = [...new Set(cuts.map((c) => c % (raw.length + 1)))].sort((a, b) => a - b).concat(raw.length);
    for (const p of points) {
      if (p <= fill) continue;
      raw.copy(buf, fill, fill, p);
      fill = p;
      const r = d.decode(buf, scan, fill, out);
      if (typeof r === 'string') return r;
      expect(r.out).toBeLessThanOrEqual(r.scan);
      expect(r.scan).toBeLessThanOrEqual(fill);
      ({ scan, out } = r);
      if (r.ended) return { body: Buffer.from(buf.subarray(0, out)), ended: true };
    }
    return { body: Buffer.from(buf.subarray(0, out)), ended: false };
  }

  it('any body, chunked any way and read in any pieces, decodes to itself', () => {
    const chunking = fc.tuple(fc.uint8Array({ maxLength: 3000 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), fc.boolean(), fc.boolean());
    fc.assert(
      fc.property(chunking, ([bytes, sizes, cuts, ext, trailer]) => {
        const body = Buffer.from(bytes);
        const parts: Buffer[] = [];
        for (let pos = 0, i = 0; pos < body.length; i++) {
          const n = Math.min(sizes[i % sizes.length] ?? 1, body.length - pos);
          parts.push(Buffer.from(`${n.toString(16)}${ext ? ';name="v"' : ''}\r\n`, 'latin1'), body.subarray(pos, pos + n), Buffer.from('\r\n'));
          pos += n;
        }
        parts.push(Buffer.from(`0\r\n${trailer ? 'X-Checksum: abc\r\n' : ''}\r\n`));
        const got = decodeAll(Buffer.concat(parts), cuts);
        if (typeof got === 'string') throw new Error(got);
        expect(got.ended).toBe(true);
        expect(got.body.equals(body)).toBe(true);
      }),
      RUNS,
    );
  });

  it('out of any bytes: a problem, or body bytes never more than were read; never a throw', () => {
    const bytes = fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF;\r\n xz'.split('')), maxLength: 200 }).map((s) => new Uint8Array(Buffer.from(s, 'latin1'))));
    fc.assert(
      fc.property(bytes, fc.array(fc.nat(), { maxLength: 10 }), (raw, cuts) => {
        const got = decodeAll(Buffer.from(raw), cuts);
        if (typeof got !== 'string') expect(got.body.length).toBeLessThanOrEqual(raw.length);
      }),
      RUNS,
    );
  });

  it.each([
    ['a chunk size that is not hex', 'zz\r\n'],
    ['a negative chunk size', '-5\r\nhello\r\n0\r\n\r\n'],
    ['chunk data not followed by CRLF', '5\r\nhelloX\r\n0\r\n\r\n'],
    ['a chunk size of 13 hex digits', '1000000000000\r\n'],
    ['a framing line that never ends', 'f'.repeat(5000)],
  ])('refuses %s', (_what, text) => {
    expect(typeof decodeAll(Buffer.from(text, 'latin1'), [])).toBe('string');
  });
});
