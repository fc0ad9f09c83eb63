import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import { isLoopbackHost } from '../daemon/request-guard.js';
import { errnoCode } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * Requests and websockets relayed to ComfyUI by http-proxy-3, streamed both ways (a 2 GB upload
 * or a video download is never held in memory), with the headers a proxy must not pass on
 * removed (RFC 9110 section 7.6.1) and everything else, Host and Origin included, unchanged: so
 * ComfyUI's own Host/Origin check still sees what the browser sent.
 */

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'upgrade'];

/** What ComfyUI's failure to answer means for the caller: it is (re)starting, try again soon. */
export type RelayFailure = (req: IncomingMessage, res: ServerResponse | Duplex, why: string) => void;

export interface Relay {
  web(req: IncomingMessage, res: ServerResponse, target: string): void;
  ws(req: IncomingMessage, socket: Duplex, head: Buffer, target: string): void;
}

export function createRelay(log: Logger, onFailure: RelayFailure): Relay {
  // No agent: one connection per request to ComfyUI on loopback. A kept-alive connection could
  // have been closed by ComfyUI (idle timeout, restart) just as it is reused, and the request
  // would fail for no reason of its own.
  const proxy = createProxyServer({ xfwd: false, changeOrigin: false, ws: true, proxyTimeout: 0 });
  proxy.on('proxyRes', (proxyRes) => {
    // Node sets Connection for our side of the exchange; the rest ComfyUI named is for its hop.
    stripHopByHop(proxyRes.headers, { keepUpgrade: false });
  });
  const fail = (err: Error, req: IncomingMessage, res: ServerResponse | Duplex): void => {
    const code = errnoCode(err) ?? err.message;
    // A client that went away while ComfyUI answered is nobody's failure. (Its socket, not the
    // request: a request whose body has been read is "destroyed" while its answer is pending.)
    if (req.socket.destroyed) return;
    log.debug({ err: code, method: req.method, path: pathOf(req) }, 'ComfyUI did not answer a relayed request');
    onFailure(req, res, code);
  };
  return {
    web: (req, res, target) => {
      stripHopByHop(req.headers, { keepUpgrade: false });
      proxy.web(req, res, { target, secure: verifyTls(target) }, (err, r, s) => fail(err, r, s));
    },
    ws: (req, socket, head, target) => {
      stripHopByHop(req.headers, { keepUpgrade: true });
      proxy.ws(req, socket, head, { target, secure: verifyTls(target) }, (err, r, s) => fail(err, r, s as Duplex));
    },
  };
}

/**
 * ComfyUI run with --tls-keyfile on loopback is our own child with, as a rule, a self-signed
 * certificate; anywhere else (--comfy-url to another machine) the certificate must be good.
 */
function verifyTls(target: string): boolean {
  try {
    return !isLoopbackHost(new URL(target).hostname);
  } catch {
    return true;
  }
}

/**
 * Remove hop-by-hop headers, and the ones Connection names, in place. A websocket handshake
 * keeps `Connection: upgrade` and `Upgrade: websocket`: they are what it asks for.
 */
export function stripHopByHop(headers: IncomingHttpHeaders, o: { keepUpgrade: boolean }): void {
  const named = String(headers.connection ?? '')
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '');
  for (const h of [...HOP_BY_HOP, ...named]) {
    if (o.keepUpgrade && (h === 'connection' || h === 'upgrade')) continue;
    // Content-Length and the like are the message's own, whatever Connection says.
    if (h === 'content-length' || h === 'transfer-encoding' || h === 'host') continue;
    delete headers[h];
  }
  if (o.keepUpgrade) headers.connection = 'Upgrade';
}

export function pathOf(req: IncomingMessage): string {
  return (req.url ?? '/').split('?')[0]?.slice(0, 200) ?? '/';
}
