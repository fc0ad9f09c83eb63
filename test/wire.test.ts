import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ModelsyncError } from '../src/errors.js';
import type { BodyReader } from '../src/transfer/body-reader.js';
import { ConnectionBudget } from '../src/transfer/budget.js';
import { receiveBlockSize } from '../src/transfer/receive-buffers.js';
import { wireRequest } from '../src/transfer/wire.js';

/**
 * The transport's framing and connection reuse against raw TCP servers that write exactly the
 * bytes a test scripts, split wherever it says: the cases a real server produces only by chance.
 */

/** `n` counts requests on the whole server, `onConn` those on this connection. */
type Script = (req: string, sock: net.Socket, n: number, onConn: number) => void;

interface RawServer {
  readonly url: (path?: string) => URL;
  /** Requests seen, and on how many distinct connections. */
  readonly seen: { requests: string[]; connections: number };
  close(): Promise<void>;
}

const servers: RawServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** A server that calls `script` for every request head it reads (HTTP/1.1, GET only). */
async function rawServer(script: Script): Promise<RawServer> {
  const seen = { requests: [] as string[], connections: 0 };
  const socks = new Set<net.Socket>();
  const srv = net.createServer((sock) => {
    seen.connections++;
    socks.add(sock);
    sock.on('close', () => socks.delete(sock));
    sock.on('error', () => undefined);
    let pending = '';
    let onConn = 0;
    sock.on('data', (d) => {
      pending += d.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        seen.requests.push(head);
        script(head, sock, seen.requests.length, ++onConn);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  const s: RawServer = {
    url: (p = '/f') => new URL(`http://127.0.0.1:${port}${p}`),
    seen,
    close: () =>
      new Promise((r) => {
        for (const x of socks) x.destroy();
        srv.close(() => r());
      }),
  };
  servers.push(s);
  return s;
}

/** Write `parts` one by one, each in its own TCP segment as far as the kernel allows. */
async function dribble(sock: net.Socket, parts: readonly (string | Buffer)[]): Promise<void> {
  for (const p of parts) {
    sock.write(p);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function readAll(body: BodyReader): Promise<Buffer> {
  const out: Buffer[] = [];
  // Blocks are views into reused buffers: copy before asking for the next.
  for (let b = await body.next(); b !== null; b = await body.next()) out.push(Buffer.from(b));
  return Buffer.concat(out);
}

/** Each test's servers are its own, so one budget (one idle pool) for the file shares nothing between tests. */
const budget = new ConnectionBudget(16);
const get = (url: URL, headers: Record<string, string> = {}, b = budget) => wireRequest({ url, headers, idleTimeoutMs: 2000 }, b);

function chunkedParts(data: Buffer, sizes: readonly number[]): Buffer[] {
  const parts: Buffer[] = [];
  let pos = 0;
  for (const n of sizes) {
    const piece = data.subarray(pos, pos + n);
    pos += piece.length;
    parts.push(Buffer.concat([Buffer.from(`${piece.length.toString(16)};ext=1\r\n`), piece, Buffer.from('\r\n')]));
  }
  parts.push(Buffer.from('0\r\nx-trailer: yes\r\n\r\n'));
  // Re-split the framed stream at odd places, so that size lines and CRLFs straddle reads.
  const all = Buffer.concat(parts);
  const cuts: Buffer[] = [];
  for (let i = 0; i < all.length; i += 7 + (i % 13)) cuts.push(all.subarray(i, Math.min(all.length, i + 7 + (i % 13))));
  return cuts;
}

describe('wire transport', () => {
  it('reassembles a chunked body whose framing is split across reads', async () => {
    const data = randomBytes(5000);
    const srv = await rawServer((_req, sock) => {
      void dribble(sock, ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n', ...chunkedParts(data, [1, 100, 2000, 1899, 1000])]);
    });
    const res = await get(srv.url());
    expect(res.status).toBe(200);
    expect((await readAll(res.body)).equals(data)).toBe(true);
  });

  it('hands out a large body intact and in order, through both buffers of the connection', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const srv = await rawServer((_req, sock) => {
      sock.write(`HTTP/1.1 200 OK\r\ncontent-length: ${data.length}\r\n\r\n`);
      sock.write(data);
    });
    const res = await get(srv.url());
    const got = await readAll(res.body);
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('reuses a kept-alive connection, and each request gets its own answer', async () => {
    const srv = await rawServer((req, sock) => {
      const body = `answer to ${req.split(' ')[1] ?? ''}`;
      sock.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    });
    for (let i = 0; i < 20; i++) {
      const res = await get(srv.url(`/r${i}`));
      expect((await readAll(res.body)).toString()).toBe(`answer to /r${i}`);
    }
    expect(srv.seen.connections).toBe(1);
  });

  it('a kept-alive connection the server closed as it was reused is replaced without failing the request', async () => {
    // The second request on any connection meets a close: what a keep-alive timeout firing just
    // as the client reuses the connection looks like.
    const srv = await rawServer((_req, sock, _n, onConn) => {
      if (onConn > 1) sock.destroy();
      else sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
    for (let i = 0; i < 3; i++) {
      const res = await get(srv.url());
      expect((await readAll(res.body)).toString()).toBe('ok');
    }
    expect(srv.seen.connections).toBe(3);
    expect(srv.seen.requests).toHaveLength(5);
  });

  it('skips 1xx answers, and never reuses a connection that sent more than Content-Length', async () => {
    const srv = await rawServer((_req, sock) => {
      sock.write('HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcEXTRA');
    });
    const a = await get(srv.url());
    expect(a.status).toBe(200);
    expect((await readAll(a.body)).toString()).toBe('abc');
    const b = await get(srv.url());
    expect((await readAll(b.body)).toString()).toBe('abc');
    expect(srv.seen.connections).toBe(2);
  });

  it('a body cut short hands out the bytes that came, then fails retryably, naming the counts', async () => {
    const srv = await rawServer((_req, sock) => {
      sock.end('HTTP/1.1 206 Partial Content\r\ncontent-length: 100\r\n\r\n0123456789');
    });
    const res = await get(srv.url());
    const first = await res.body.next();
    expect(first?.toString()).toBe('0123456789');
    const err = await res.body.next().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelsyncError);
    expect((err as ModelsyncError).retryable).toBe(true);
    expect((err as ModelsyncError).message).toMatch(/after 10 of 100 body bytes/);
  });

  it('a slow body is handed out as it comes, not when a block is full (bytes in memory are in no journal)', async () => {
    let hold: net.Socket | undefined;
    const srv = await rawServer((_req, sock) => {
      hold = sock;
      sock.write(`HTTP/1.1 200 OK\r\ncontent-length: ${1 << 20}\r\n\r\n${'x'.repeat(1000)}`);
    });
    const res = await wireRequest({ url: srv.url(), headers: {}, idleTimeoutMs: 120_000 }, budget);
    expect((await res.body.next())?.length).toBe(1000);
    hold?.destroy();
    await expect(res.body.next()).rejects.toMatchObject({ code: 'E_NETWORK' });
  });

  it('a body delimited by the connection closing ends cleanly', async () => {
    const srv = await rawServer((_req, sock) => {
      void dribble(sock, ['HTTP/1.1 200 OK\r\n\r\n', 'one ', 'two']).then(() => sock.end());
    });
    const res = await get(srv.url());
    expect((await readAll(res.body)).toString()).toBe('one two');
  });

  it('takes an old server\'s "Transfer-Encoding: identity" as no coding', async () => {
    const srv = await rawServer((_req, sock) => sock.write('HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\ncontent-length: 5\r\n\r\nhello'));
    const res = await get(srv.url());
    expect((await readAll(res.body)).toString()).toBe('hello');
  });

  it('refuses what it must not guess about: a bad Content-Length, an unknown coding, a huge head', async () => {
    const answers = [
      'HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n',
      `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70 * 1024)}\r\n\r\n`,
      'NOT-HTTP garbage\r\n\r\n',
    ];
    const srv = await rawServer((_req, sock, n) => sock.end(answers[n - 1] ?? ''));
    for (let i = 0; i < answers.length; i++) {
      const err = await get(srv.url()).catch((e: unknown) => e);
      expect(err, answers[i]?.slice(0, 40)).toBeInstanceOf(ModelsyncError);
      expect((err as ModelsyncError).code).toBe('E_NETWORK');
    }
  });

  it('an idle server is cut by the timeout; an abort stops a request at once', async () => {
    const srv = await rawServer((_req, sock) => sock.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc'));
    const res = await wireRequest({ url: srv.url(), headers: {}, idleTimeoutMs: 100 }, budget);
    expect((await res.body.next())?.toString()).toBe('abc');
    await expect(res.body.next()).rejects.toMatchObject({ code: 'E_TIMEOUT' });
    const ctrl = new AbortController();
    const silent = await rawServer(() => undefined);
    const pending = wireRequest({ url: silent.url(), headers: {}, idleTimeoutMs: 60_000, signal: ctrl.signal }, budget);
    ctrl.abort();
    await expect(pending).rejects.toMatchObject({ code: 'E_ABORTED' });
  });

  it('refuses header values that would split the request', async () => {
    const srv = await rawServer(() => undefined);
    await expect(get(srv.url(), { authorization: 'Bearer x\r\nx-evil: 1' })).rejects.toMatchObject({ code: 'E_CONFIG' });
    expect(srv.seen.requests).toHaveLength(0);
  });
});

describe('the connection budget', () => {
  const answer = (_req: string, sock: net.Socket): void => void sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');

  it('kept-alive connections belong to one budget: another budget opens its own', async () => {
    const srv = await rawServer(answer);
    const other = new ConnectionBudget(16);
    for (const b of [budget, other, budget, other]) expect((await readAll((await get(srv.url(), {}, b)).body)).toString()).toBe('ok');
    expect(srv.seen.connections).toBe(2);
  });

  it('keeps no more idle connections per route than the budget has connections', async () => {
    const srv = await rawServer(answer);
    const two = new ConnectionBudget(2);
    const round = async (): Promise<void> => {
      const all = await Promise.all([1, 2, 3].map(() => get(srv.url(), {}, two)));
      for (const r of all) expect((await readAll(r.body)).toString()).toBe('ok');
    };
    await round();
    expect(srv.seen.connections).toBe(3);
    // Two were kept, the third closed: the next three requests open one more.
    await round();
    expect(srv.seen.connections).toBe(4);
  });

  it('runs at most `connections` requests at once, and the rest as slots free up', async () => {
    const b = new ConnectionBudget(2);
    let running = 0;
    let most = 0;
    const gates: (() => void)[] = [];
    const tasks = [1, 2, 3, 4, 5].map(() =>
      b.request(
        async () => {
          most = Math.max(most, ++running);
          await new Promise<void>((r) => gates.push(r));
          running--;
        },
        { host: 'h' },
      ),
    );
    for (let done = 0; done < 5; done++) {
      while (gates.length === 0) await new Promise((r) => setImmediate(r));
      gates.shift()?.();
    }
    await Promise.all(tasks);
    expect(most).toBe(2);
  });

  it('sizes what depends on it: files in flight, lookups, the SDK\'s sockets, receive blocks', () => {
    expect([1, 4, 16, 64].map((n) => new ConnectionBudget(n).files)).toEqual([4, 4, 16, 64]);
    expect([1, 4, 16].map((n) => new ConnectionBudget(n).lookups)).toEqual([1, 4, 4]);
    expect(new ConnectionBudget(16).sdkSockets).toBe(24);
    // 16 MiB of receive memory in all, two blocks per connection, 128-512 KiB each.
    expect([1, 16, 32, 64, 1000].map(receiveBlockSize)).toEqual([512, 512, 256, 128, 128].map((k) => k * 1024));
    // Sized by the connections open, not the cap: the 17th connection gets half the block of the 16th.
    const b = new ConnectionBudget(64);
    const sizes = Array.from({ length: 33 }, () => {
      const s = b.receiveBlockSize;
      b.opened();
      return s;
    });
    expect([sizes[0], sizes[15], sizes[16], sizes[31], sizes[32]]).toEqual([512, 512, 256, 256, 128].map((k) => k * 1024));
  });
});
