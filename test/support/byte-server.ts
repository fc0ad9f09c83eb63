/**
 * A plain static file server for https:// sources (HTTP or, given a certificate, TLS), with
 * Range support, request records and redirects, so that hostile tests can put a fault proxy or
 * a self-signed certificate in front of ordinary bytes.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { serveBlob } from './hub-body.js';
import type { BlobFaults, HubRequestRecord } from './hub-types.js';

export interface ByteRequest {
  readonly path: string;
  readonly range: string | undefined;
  readonly authorization: string | undefined;
  status: number;
}

export interface ByteServerOptions {
  /** URL path -> bytes. */
  readonly files: Readonly<Record<string, Buffer>>;
  /** URL path -> Location of a 302. */
  readonly redirects?: Readonly<Record<string, string>>;
  readonly host?: string;
  readonly tls?: { readonly key: string; readonly cert: string };
  /** Extra response headers on every file response (e.g. a hostile Content-Disposition). */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * URL path -> the Hub stand-in's faults for that file, served the same way (hub-body.ts): one
   * catalogue of body-level lies (short, sizeless, endless, trickling, lying Content-Range...).
   */
  readonly faults?: Readonly<Record<string, BlobFaults>>;
  /** A status to answer instead (e.g. 503 once, 401 without the right token); undefined serves. */
  readonly intercept?: (req: ByteRequest, url: URL) => number | undefined;
}

export interface ByteServer {
  /** Origin, e.g. http://127.0.0.1:1234 */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly requests: ByteRequest[];
  /** Body bytes written, over all responses. */
  bytesServed: number;
  /** TLS handshakes the client broke off (it refused our certificate). */
  tlsFailures: number;
  close(): Promise<void>;
}

export async function startByteServer(opts: ByteServerOptions): Promise<ByteServer> {
  const host = opts.host ?? '127.0.0.1';
  const sockets = new Set<Socket>();
  // Copies: counters are consumed as faults fire.
  const faults = new Map(Object.entries(opts.faults ?? {}).map(([k, f]) => [k, structuredClone(f)]));
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    const rec: ByteRequest = { path: p, range: req.headers.range, authorization: req.headers.authorization, status: 0 };
    server.requests.push(rec);
    const forced = opts.intercept?.(rec, new URL(req.url ?? '/', 'http://x'));
    if (forced !== undefined) {
      rec.status = forced;
      res.writeHead(forced, { 'content-length': 0 }).end();
      return;
    }
    const to = opts.redirects?.[p];
    if (to !== undefined) {
      rec.status = 302;
      res.writeHead(302, { location: to, 'content-length': 0 }).end();
      return;
    }
    const body = opts.files[p];
    if (body === undefined) {
      rec.status = 404;
      res.writeHead(404, { 'content-length': 0 }).end();
      return;
    }
    const headers = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', ...opts.headers };
    if (faults.has(p)) {
      const record: HubRequestRecord = { host: 'cdn', method: req.method ?? 'GET', url: req.url ?? '/', status: 0, authorization: rec.authorization, range: rec.range, inFlight: 0, at: Date.now(), conn: 0 };
      serveBlob({ req, res, url: new URL(req.url ?? '/', 'http://x'), record }, { key: p, content: body, headers, host: 'cdn' }, { faults, countBytes: (_k, n) => void (server.bytesServed += n) });
      rec.status = record.status;
      return;
    }
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = body.length;
    rec.status = 200;
    if (m) {
      start = Number(m[1]);
      end = Math.min(m[2] ? Number(m[2]) + 1 : body.length, body.length);
      rec.status = 206;
      res.writeHead(206, { ...headers, 'content-length': end - start, 'content-range': `bytes ${start}-${end - 1}/${body.length}` });
    } else {
      res.writeHead(200, { ...headers, 'content-length': body.length });
    }
    const slice = body.subarray(start, end);
    server.bytesServed += slice.length;
    res.end(slice);
  };
  const http: Server = opts.tls ? createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }, handler) : createHttpServer(handler);
  http.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  // A TLS handshake the client refuses surfaces here; it is the point of some tests, not a failure.
  http.on('tlsClientError', () => void server.tlsFailures++);
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, host, () => resolve());
  });
  const port = (http.address() as AddressInfo).port;
  const server: ByteServer = {
    url: `${opts.tls ? 'https' : 'http'}://${host}:${port}`,
    host,
    port,
    requests: [],
    bytesServed: 0,
    tlsFailures: 0,
    close: async () => {
      const closed = new Promise<void>((r) => http.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
  return server;
}
