import type { IncomingHttpHeaders } from 'node:http';

/** How the body after a response head is delimited (RFC 9112 section 6.3). */
export type Framing = { readonly kind: 'length'; readonly length: number } | { readonly kind: 'chunked' } | { readonly kind: 'close' };

export interface ResponseHead {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly framing: Framing;
  /** Whether the connection may carry another request once this body is read. */
  readonly keepAlive: boolean;
}

/** Header lines that may repeat as separate values rather than be joined with ", ". */
const LIST_AS_ARRAY = new Set(['set-cookie']);

/**
 * Parse a response head (status line and header lines, without the blank line that ends it).
 * Returns a string saying what is wrong for anything a careful client must not guess about:
 * conflicting or malformed Content-Length, an unknown transfer coding.
 */
export function parseResponseHead(text: string, method: 'GET' | 'HEAD'): ResponseHead | string {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!m) return `bad status line "${(lines[0] ?? '').slice(0, 80)}"`;
  const minor = m[1];
  const status = Number(m[2]);
  // No prototype: a header named "constructor" or "__proto__" is a header like any other.
  const headers: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const colon = line.indexOf(':');
    if (colon <= 0) return `bad header line "${line.slice(0, 80)}"`;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const had = headers[name];
    if (had === undefined) headers[name] = LIST_AS_ARRAY.has(name) ? [value] : value;
    else if (Array.isArray(had)) had.push(value);
    else headers[name] = name === 'content-length' && had !== value ? `${had},${value}` : `${had}, ${value}`;
  }
  const connection = String(headers.connection ?? '').toLowerCase();
  let keepAlive = minor === '1' ? !connection.includes('close') : connection.includes('keep-alive');
  // "identity" is no coding at all (RFC 2616 named it; some old servers still send it).
  const te = String(headers['transfer-encoding'] ?? '').toLowerCase().trim() === 'identity' ? undefined : headers['transfer-encoding'];
  const cl = headers['content-length'];
  let framing: Framing;
  if (method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200)) {
    framing = { kind: 'length', length: 0 };
  } else if (te !== undefined) {
    if (String(te).toLowerCase().trim() !== 'chunked') return `unsupported Transfer-Encoding "${String(te)}"`;
    framing = { kind: 'chunked' };
    // A length beside chunked is a smuggling signal: read this body, then drop the connection.
    if (cl !== undefined) keepAlive = false;
  } else if (cl !== undefined) {
    const v = String(cl);
    if (!/^\d{1,15}$/.test(v)) return `bad Content-Length "${v.slice(0, 40)}"`;
    framing = { kind: 'length', length: Number(v) };
  } else {
    framing = { kind: 'close' };
    keepAlive = false;
  }
  return { status, headers, framing, keepAlive };
}
