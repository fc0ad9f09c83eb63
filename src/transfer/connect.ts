import net from 'node:net';
import tls from 'node:tls';
import type { ProxyEndpoint } from '../proxy/proxy-settings.js';
import { connectToProxy, openTunnel } from './tunnel.js';

/** A socket to talk HTTP/1.1 to a URL's origin over, and how to use it. */
export interface Connected {
  readonly socket: net.Socket;
  /**
   * False when reads arrive as 'data' events instead of landing where `onread` says: TLS started
   * over an existing socket (a CONNECT tunnel) ignores `onread`, so each read is copied in.
   */
  readonly onreadHonoured: boolean;
  /** Requests go to an http:// proxy in absolute form (`GET http://host/path`). */
  readonly absoluteForm: boolean;
  /** The proxy in the way, for Proxy-Authorization on absolute-form requests. */
  readonly proxy: ProxyEndpoint | undefined;
}

export interface ConnectOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
}

/**
 * A TCP or TLS socket to the URL's origin whose reads land where `onread` says: directly, or
 * through a proxy. https:// goes through a CONNECT tunnel, with TLS (SNI = the target host)
 * inside it; http:// is sent to the proxy in absolute form, which any forward proxy accepts
 * (many refuse CONNECT to ports other than 443).
 */
export async function connect(url: URL, onread: net.OnReadOpts, proxy: ProxyEndpoint | undefined, opts: ConnectOptions): Promise<Connected> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const https = url.protocol === 'https:';
  if (proxy === undefined) return { socket: direct(url, host, https, onread), onreadHonoured: true, absoluteForm: false, proxy };
  if (!https) return { socket: await connectToProxy(proxy, url, { ...opts, onread }), onreadHonoured: true, absoluteForm: true, proxy };
  const tunnel = await openTunnel(proxy, url, opts);
  // `host` is what the certificate is checked against (the socket is the tunnel's, not a connection to it).
  const socket = tls.connect({ socket: tunnel, host, servername: net.isIP(host) ? '' : host, ALPNProtocols: ['http/1.1'] });
  return { socket, onreadHonoured: false, absoluteForm: false, proxy };
}

function direct(url: URL, host: string, https: boolean, onread: net.OnReadOpts): net.Socket {
  const port = Number(url.port || (https ? 443 : 80));
  const socket = https
    ? // onread is honoured by tls.connect (Node >= 14) but missing from its type.
      tls.connect({ host, port, servername: net.isIP(host) ? '' : host, ALPNProtocols: ['http/1.1'], onread } as tls.ConnectionOptions)
    : net.connect({ host, port, onread });
  socket.setNoDelay(true);
  return socket;
}
