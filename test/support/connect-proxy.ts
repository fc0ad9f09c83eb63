/**
 * A real forward proxy for tests: TooTallNate's `proxy` package (CONNECT tunnels and
 * absolute-form requests), on 127.0.0.9, wrapped to record every request it gets, to require
 * Basic proxy credentials, to refuse chosen targets like a corporate proxy does (403 to
 * CONNECT), and to resolve made-up host names itself (a cluster whose pods cannot resolve
 * outside names, only their egress proxy can).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { createProxy } from 'proxy';

export interface ProxyRecord {
  /** CONNECT, or the method of an absolute-form request. */
  readonly method: string;
  /** `host:port` for CONNECT, the absolute URL otherwise (as asked, before any mapping). */
  readonly target: string;
  readonly proxyAuthorization: string | undefined;
  /** Every header name the proxy saw, lower case. */
  readonly headerNames: readonly string[];
  /** 0 while forwarded; the status of the proxy's own refusal (403, 407) otherwise. */
  refusedWith: number;
}

export interface TestProxyOptions {
  /** Required Basic credentials; answered 407 when missing or wrong. */
  readonly auth?: { readonly user: string; readonly password: string };
  /** A status to refuse a target (`host:port`) with, or undefined to forward it. */
  readonly refuse?: (target: string) => number | undefined;
  /** Host names the proxy resolves itself: name -> IP. */
  readonly hosts?: Readonly<Record<string, string>>;
  readonly host?: string;
  /** Speak TLS to clients: an https:// proxy. */
  readonly tls?: { readonly key: string; readonly cert: string };
}

export interface TestProxy {
  /** http(s)://127.0.0.9:PORT, without credentials. */
  readonly url: string;
  readonly port: number;
  readonly requests: ProxyRecord[];
  /** The URL with credentials in it (user:password@), as a user writes HTTPS_PROXY. */
  urlWith(user: string, password: string): string;
  close(): Promise<void>;
}

type ConnectHandler = (this: Server, req: IncomingMessage, socket: Socket, head: Buffer) => void;
type RequestHandler = (this: Server, req: IncomingMessage, res: ServerResponse) => void;

export async function startProxy(opts: TestProxyOptions = {}): Promise<TestProxy> {
  const server = createProxy(opts.tls ? createTlsServer({ key: opts.tls.key, cert: opts.tls.cert }) : createServer());
  const onConnect = server.listeners('connect')[0] as ConnectHandler;
  const onRequest = server.listeners('request')[0] as RequestHandler;
  server.removeAllListeners('connect');
  server.removeAllListeners('request');
  const requests: ProxyRecord[] = [];
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const expected = opts.auth === undefined ? undefined : `Basic ${Buffer.from(`${opts.auth.user}:${opts.auth.password}`).toString('base64')}`;
  if (expected !== undefined) server.authenticate = (req: IncomingMessage) => req.headers['proxy-authorization'] === expected;
  const record = (req: IncomingMessage): ProxyRecord => {
    const rec: ProxyRecord = { method: req.method ?? '', target: req.url ?? '', proxyAuthorization: req.headers['proxy-authorization'], headerNames: Object.keys(req.headers), refusedWith: 0 };
    requests.push(rec);
    if (expected !== undefined && req.headers['proxy-authorization'] !== expected) rec.refusedWith = 407;
    return rec;
  };
  const mapped = (hostPort: string): string => {
    const i = hostPort.lastIndexOf(':');
    const ip = opts.hosts?.[hostPort.slice(0, i)];
    return ip === undefined ? hostPort : `${ip}${hostPort.slice(i)}`;
  };
  server.on('connect', function (this: Server, req: IncomingMessage, socket: Socket, head: Buffer) {
    const rec = record(req);
    const status = rec.refusedWith === 0 ? opts.refuse?.(req.url ?? '') : undefined;
    if (status !== undefined) {
      rec.refusedWith = status;
      socket.end(`HTTP/1.1 ${status} Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 22\r\n\r\nblocked by proxy rules`);
      return;
    }
    req.url = mapped(req.url ?? '');
    onConnect.call(this, req, socket, head);
  });
  server.on('request', function (this: Server, req: IncomingMessage, res: ServerResponse) {
    const rec = record(req);
    let u: URL | undefined;
    try {
      u = new URL(req.url ?? '');
    } catch {
      u = undefined;
    }
    const status = rec.refusedWith === 0 && u !== undefined ? opts.refuse?.(u.host) : undefined;
    if (status !== undefined) {
      rec.refusedWith = status;
      res.writeHead(status, { 'content-type': 'text/plain' }).end('blocked by proxy rules');
      return;
    }
    if (u !== undefined) {
      const to = mapped(`${u.hostname}:${u.port || 80}`);
      req.url = `${u.protocol}//${to}${u.pathname}${u.search}`;
    }
    onRequest.call(this, req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, opts.host ?? '127.0.0.9', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host ?? '127.0.0.9';
  const scheme = opts.tls ? 'https' : 'http';
  return {
    url: `${scheme}://${host}:${port}`,
    port,
    requests,
    urlWith: (user, password) => `${scheme}://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}`,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
