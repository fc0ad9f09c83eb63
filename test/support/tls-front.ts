/**
 * TLS in front of a plain test server (the Hub stand-in speaks http only): what huggingface.co
 * and its CDN look like to a client, for tests that need https end to end (CONNECT tunnels).
 */
import net from 'node:net';
import tls from 'node:tls';

export interface TlsFront {
  /** https://HOST:PORT */
  readonly origin: string;
  /** SNI names the clients sent, one per TLS connection (empty for none). */
  readonly servernames: string[];
  close(): Promise<void>;
}

export async function startTlsFront(cert: { key: string; cert: string }, host: string, backend: { host: string; port: number }): Promise<TlsFront> {
  const sockets = new Set<net.Socket>();
  const servernames: string[] = [];
  const server = tls.createServer({ key: cert.key, cert: cert.cert, ALPNProtocols: ['http/1.1'] }, (client) => {
    servernames.push(typeof client.servername === 'string' ? client.servername : '');
    const up = net.connect(backend);
    sockets.add(up);
    up.once('close', () => sockets.delete(up));
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
    client.pipe(up).pipe(client);
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    origin: `https://${host}:${port}`,
    servernames,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
