import net from 'node:net';
import tls from 'node:tls';
import { ModelsyncError } from '../errors.js';
import { proxyRefused, proxyUnreachable } from '../proxy/proxy-errors.js';
import type { ProxyEndpoint } from '../proxy/proxy-settings.js';
import { parseResponseHead } from './response-head.js';

const MAX_HEAD = 16 * 1024;

export interface ProxyConnectOptions {
  /** The proxy must connect (and answer a CONNECT) within this long. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** For a plain http:// target: where the socket's reads land (an absolute-form connection). */
  readonly onread?: net.OnReadOpts | undefined;
}

/** `host:port` of a URL, the authority of a CONNECT request. */
export function authorityOf(url: URL): string {
  return `${url.hostname}:${url.port || (url.protocol === 'https:' ? 443 : 80)}`;
}

/** A connected socket to the proxy itself (TLS for an https:// proxy). */
export async function connectToProxy(proxy: ProxyEndpoint, target: URL, opts: ProxyConnectOptions): Promise<net.Socket> {
  const socket =
    proxy.protocol === 'https:'
      ? // onread is honoured by tls.connect (Node >= 14) but missing from its type.
        tls.connect({ host: proxy.host, port: proxy.port, servername: net.isIP(proxy.host) ? '' : proxy.host, ALPNProtocols: ['http/1.1'], onread: opts.onread } as tls.ConnectionOptions)
      : net.connect({ host: proxy.host, port: proxy.port, ...(opts.onread ? { onread: opts.onread } : {}) });
  socket.setNoDelay(true);
  await settle(socket, proxy, target, opts, proxy.protocol === 'https:' ? 'secureConnect' : 'connect');
  return socket;
}

/**
 * A CONNECT tunnel through the proxy to the target's host and port; the caller starts TLS in it.
 * Proxy-Authorization goes in the CONNECT request only: nothing inside the tunnel is the proxy's.
 */
export async function openTunnel(proxy: ProxyEndpoint, target: URL, opts: ProxyConnectOptions): Promise<net.Socket> {
  const socket = await connectToProxy(proxy, target, { timeoutMs: opts.timeoutMs, signal: opts.signal });
  const authority = authorityOf(target);
  const lines = [`CONNECT ${authority} HTTP/1.1`, `host: ${authority}`, 'user-agent: modelsync/0.1'];
  if (proxy.authorization !== undefined) lines.push(`proxy-authorization: ${proxy.authorization}`);
  socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  const head = await readConnectAnswer(socket, proxy, target, opts);
  if (head.status >= 200 && head.status < 300) return socket;
  socket.destroy();
  throw proxyRefused(proxy, authorityOf(target), head.status, head.reason);
}

/** Wait for a socket event, failing with an error that names the proxy (never its credentials). */
function settle(socket: net.Socket, proxy: ProxyEndpoint, target: URL, opts: ProxyConnectOptions, event: 'connect' | 'secureConnect'): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (e?: Error): void => {
      clearTimeout(timer);
      socket.off(event, ok);
      socket.off('error', bad);
      socket.off('close', closed);
      opts.signal?.removeEventListener('abort', aborted);
      if (e === undefined) return resolve();
      socket.destroy();
      reject(e);
    };
    const ok = (): void => done();
    const bad = (e: Error): void => done(proxyUnreachable(proxy, authorityOf(target), e));
    const closed = (): void => done(new ModelsyncError('E_PROXY', `proxy ${proxy.name} closed the connection before it was set up (for ${authorityOf(target)})`, { url: proxy.name, retryable: true }));
    const aborted = (): void => done(new ModelsyncError('E_ABORTED', `request to ${authorityOf(target)} through proxy ${proxy.name} aborted`, { url: proxy.name, cause: opts.signal?.reason }));
    const timer = setTimeout(() => done(new ModelsyncError('E_PROXY', `proxy ${proxy.name} did not answer within ${opts.timeoutMs} ms (for ${authorityOf(target)})`, { url: proxy.name, retryable: true })), opts.timeoutMs);
    if (opts.signal?.aborted) return aborted();
    socket.once(event, ok);
    socket.on('error', bad);
    socket.once('close', closed);
    opts.signal?.addEventListener('abort', aborted, { once: true });
  });
}

/** The proxy's answer to CONNECT: its status line and headers, and nothing after them. */
function readConnectAnswer(socket: net.Socket, proxy: ProxyEndpoint, target: URL, opts: ProxyConnectOptions): Promise<{ status: number; reason: string }> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const done = (e: Error | undefined, v?: { status: number; reason: string }): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', bad);
      socket.off('close', closed);
      opts.signal?.removeEventListener('abort', aborted);
      socket.pause();
      if (e !== undefined) {
        socket.destroy();
        reject(e);
      } else if (v !== undefined) resolve(v);
    };
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) {
        if (got.length > MAX_HEAD) done(new ModelsyncError('E_PROXY', `proxy ${proxy.name} sent a CONNECT answer over ${MAX_HEAD} bytes`, { url: proxy.name }));
        return;
      }
      const head = parseResponseHead(got.subarray(0, end).toString('latin1'), 'HEAD');
      if (typeof head === 'string') return done(new ModelsyncError('E_PROXY', `proxy ${proxy.name} answered CONNECT with ${head}`, { url: proxy.name }));
      const ok = head.status >= 200 && head.status < 300;
      // The target speaks first only after our TLS hello: bytes here would be the proxy's, misread as the server's.
      if (ok && got.length > end + 4) return done(new ModelsyncError('E_PROXY', `proxy ${proxy.name} sent bytes after its CONNECT answer`, { url: proxy.name }));
      const reason = /^HTTP\/1\.[01] \d{3} ?(.*)$/.exec(got.subarray(0, got.indexOf('\r\n')).toString('latin1'))?.[1]?.trim().slice(0, 80) ?? '';
      done(undefined, { status: head.status, reason });
    };
    const bad = (e: Error): void => done(proxyUnreachable(proxy, authorityOf(target), e));
    const closed = (): void => done(new ModelsyncError('E_PROXY', `proxy ${proxy.name} closed the connection instead of answering CONNECT to ${authorityOf(target)}`, { url: proxy.name, retryable: true }));
    const aborted = (): void => done(new ModelsyncError('E_ABORTED', `request to ${authorityOf(target)} through proxy ${proxy.name} aborted`, { url: proxy.name, cause: opts.signal?.reason }));
    const timer = setTimeout(() => done(new ModelsyncError('E_PROXY', `proxy ${proxy.name} did not answer CONNECT to ${authorityOf(target)} within ${opts.timeoutMs} ms`, { url: proxy.name, retryable: true })), opts.timeoutMs);
    if (opts.signal?.aborted) return aborted();
    socket.on('data', onData);
    socket.on('error', bad);
    socket.once('close', closed);
    opts.signal?.addEventListener('abort', aborted, { once: true });
  });
}
