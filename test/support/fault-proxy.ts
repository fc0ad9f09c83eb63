/**
 * A TCP proxy that breaks connections below HTTP: resets, clean truncations, stalls and slow
 * links, counted on the server->client bytes of each connection.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

export type ProxyMode =
  | { kind: 'pass' }
  | { kind: 'reset-after'; bytes: number; times: number }
  | { kind: 'stall-after'; bytes: number; times: number }
  | { kind: 'slow'; bytesPerSecond: number }
  | { kind: 'truncate-after'; bytes: number; times: number };

export interface FaultProxy {
  url: string;
  port: number;
  /** Read live for each chunk; `times` counts connections hit and is decremented here. */
  mode: ProxyMode;
  /** Server->client bytes handed to client sockets, over all connections. */
  bytesForwarded: number;
  close(): Promise<void>;
}

const HIGH_WATER = 1 << 20;

export async function startFaultProxy(target: { host: string; port: number }, mode: ProxyMode = { kind: 'pass' }): Promise<FaultProxy> {
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    track(client);
    track(upstream);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    // Requests pass untouched (and keep flowing even while the response side is stalled).
    client.pipe(upstream);
    forwardResponses(upstream, client, proxy);
  });
  server.on('connection', track);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const proxy: FaultProxy = {
    url: `http://127.0.0.1:${port}`,
    port,
    mode,
    bytesForwarded: 0,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
  return proxy;
}

function forwardResponses(upstream: Socket, client: Socket, proxy: FaultProxy): void {
  const queue: Buffer[] = [];
  let queued = 0;
  let sent = 0;
  let upstreamEnded = false;
  let running = false;
  let dead = false;
  let broken = false;
  client.once('close', () => (dead = true));

  const write = (chunk: Buffer): Promise<boolean> =>
    new Promise((resolve) => {
      if (chunk.length === 0 || dead) return resolve(!dead);
      const onClose = (): void => resolve(false);
      client.once('close', onClose);
      client.write(chunk, (err) => {
        client.off('close', onClose);
        if (!err) {
          sent += chunk.length;
          proxy.bytesForwarded += chunk.length;
        }
        resolve(!err);
      });
    });
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  /** Returns false once the connection has been broken on purpose. */
  const forward = async (chunk: Buffer): Promise<boolean> => {
    const mode = proxy.mode;
    if (mode.kind === 'pass') return write(chunk);
    if (mode.kind === 'slow') {
      const step = Math.max(1, Math.floor(mode.bytesPerSecond / 20));
      for (let off = 0; off < chunk.length && !dead; off += step) {
        const part = chunk.subarray(off, off + step);
        if (!(await write(part))) return false;
        await sleep((part.length / mode.bytesPerSecond) * 1000);
      }
      return !dead;
    }
    const allowed = Math.max(0, mode.bytes - sent);
    if (chunk.length <= allowed || mode.times <= 0) return write(chunk);
    mode.times--;
    broken = true;
    if (mode.kind !== 'stall-after') client.unpipe(upstream);
    await write(chunk.subarray(0, allowed));
    if (mode.kind === 'reset-after') {
      client.resetAndDestroy();
      upstream.destroy();
    } else if (mode.kind === 'truncate-after') {
      client.end();
      upstream.destroy();
    } else {
      // Stalled: both sockets stay open, nothing more goes to the client.
      upstream.pause();
    }
    return false;
  };

  const run = async (): Promise<void> => {
    if (running) return;
    running = true;
    while (queue.length > 0 && !dead) {
      const chunk = queue.shift() as Buffer;
      queued -= chunk.length;
      if (queued < HIGH_WATER) upstream.resume();
      if (!(await forward(chunk))) {
        queue.length = 0;
        return; // `running` stays true: this connection forwards nothing more.
      }
    }
    running = false;
    if (upstreamEnded && !dead) client.end();
  };

  upstream.on('data', (chunk: Buffer) => {
    queue.push(chunk);
    queued += chunk.length;
    if (queued >= HIGH_WATER) upstream.pause();
    void run();
  });
  upstream.on('end', () => {
    upstreamEnded = true;
    void run();
  });
  upstream.on('close', () => {
    // An upstream that vanished mid-response is passed on as an abrupt close.
    if (!upstreamEnded && !dead && !broken) client.destroy();
  });
}
