import net from 'node:net';
import tls from 'node:tls';

/** A TCP or TLS socket to the URL's origin whose reads land where `onread` says. */
export function connect(url: URL, onread: net.OnReadOpts): net.Socket {
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const socket =
    url.protocol === 'https:'
      ? // onread is honoured by tls.connect (Node >= 14) but missing from its type.
        tls.connect({ host, port, servername: net.isIP(host) ? '' : host, ALPNProtocols: ['http/1.1'], onread } as tls.ConnectionOptions)
      : net.connect({ host, port, onread });
  socket.setNoDelay(true);
  return socket;
}
