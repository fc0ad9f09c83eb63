import { randomBytes } from 'node:crypto';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { HubRequestRecord } from './hub-types.js';

/** One request/response pair plus its stats record, whose status is filled in by head(). */
export interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  record: HubRequestRecord;
  /** The body's last byte went to the kernel: from the client's side the request is over (pacing may still hold the response open a while). */
  lastByteSent?: () => void;
}

export interface HubError {
  status: number;
  code?: string;
  message: string;
  headers?: OutgoingHttpHeaders;
}

export function head(ex: Exchange, status: number, headers: OutgoingHttpHeaders): void {
  ex.record.status = status;
  ex.res.writeHead(status, { 'x-request-id': `Root=1-${randomBytes(12).toString('hex')}`, ...headers });
}

export function sendJson(ex: Exchange, status: number, body: unknown, headers: OutgoingHttpHeaders = {}): void {
  const text = Buffer.from(JSON.stringify(body));
  head(ex, status, { 'content-type': 'application/json; charset=utf-8', 'content-length': text.length, ...headers });
  ex.res.end(text);
}

export function sendError(ex: Exchange, err: HubError): void {
  const headers: OutgoingHttpHeaders = { 'x-error-message': err.message, ...err.headers };
  if (err.code !== undefined) headers['x-error-code'] = err.code;
  sendJson(ex, err.status, { error: err.message }, headers);
}

export function redirectTo(ex: Exchange, location: string, status = 307): void {
  const body = Buffer.from(`Redirecting to ${location}`);
  head(ex, status, { location, 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length });
  ex.res.end(body);
}

/** From now on, what `res.end(body)` is given goes out a slice every 50 ms at `bytesPerSecond`. */
export function paceBody(res: ServerResponse, bytesPerSecond: number): void {
  const end = res.end.bind(res);
  const step = Math.max(1, Math.floor(bytesPerSecond / 20));
  const paced = (chunk?: unknown): ServerResponse => {
    const body = Buffer.isBuffer(chunk) ? chunk : typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.alloc(0);
    let pos = 0;
    const next = (): void => {
      if (res.destroyed) return;
      if (pos >= body.length) {
        end();
        return;
      }
      res.write(body.subarray(pos, pos + step));
      pos += step;
      setTimeout(next, (step / bytesPerSecond) * 1000);
    };
    next();
    return res;
  };
  res.end = paced as ServerResponse['end'];
}

export function notFoundPage(ex: Exchange): void {
  sendJson(ex, 404, { error: "Sorry, we can't find the page you are looking for." });
}

export function methodNotAllowed(ex: Exchange, allow: string): void {
  sendJson(ex, 405, { error: `Method ${ex.req.method ?? ''} not allowed` }, { allow });
}

export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    size += b.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Path segments, each percent-decoded; undefined when the encoding is malformed. */
export function decodeSegments(pathname: string): string[] | undefined {
  try {
    return pathname.split('/').slice(1).map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}

export function contentTypeFor(path: string): string {
  if (path.endsWith('.json')) return 'application/json; charset=utf-8';
  if (/\.(txt|md|yaml|yml|py|csv)$/i.test(path)) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

export function contentDisposition(path: string): string {
  const name = path.slice(path.lastIndexOf('/') + 1);
  return `inline; filename*=UTF-8''${encodeURIComponent(name)}; filename="${name.replace(/[^\x20-\x7e]|["\\]/g, '_')}";`;
}
