/**
 * A POST over our own client (the Hub's paths-info, issue 15: the Hub's metadata no longer goes
 * through fetch): its body and length sent, a 303 turning it into a GET without its body, a 307
 * keeping both, and a kept-alive connection the server had closed replaced silently.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { BodyReader } from '../src/transfer/body-reader.js';
import { ConnectionBudget } from '../src/transfer/budget.js';
import { httpRequest } from '../src/transfer/http.js';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly type: string | undefined;
  readonly length: string | undefined;
  readonly body: string;
}

const servers: http.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function server(answer: (s: Seen, res: http.ServerResponse) => void): Promise<{ url: (p: string) => string; seen: Seen[]; server: http.Server }> {
  const seen: Seen[] = [];
  const srv = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const s = { method: req.method ?? '', url: req.url ?? '', type: req.headers['content-type'], length: req.headers['content-length'], body: Buffer.concat(parts).toString() };
      seen.push(s);
      answer(s, res);
    });
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  return { url: (p) => `http://127.0.0.1:${port}${p}`, seen, server: srv };
}

async function text(body: BodyReader): Promise<string> {
  const out: Buffer[] = [];
  for (let b = await body.next(); b !== null; b = await body.next()) out.push(Buffer.from(b));
  return Buffer.concat(out).toString();
}

const post = (url: string, body: string, connections: ConnectionBudget) =>
  httpRequest({ url, method: 'POST', body: Buffer.from(body), headers: { 'content-type': 'application/json' }, idleTimeoutMs: 5000, connections });

describe('a POST over the wire client', () => {
  it('sends its method, length and body, and reads the answer', async () => {
    const s = await server((q, res) => res.end(`got ${q.body}`));
    const r = await post(s.url('/api/x'), '{"paths":["a"]}', new ConnectionBudget(4));
    expect(r.status).toBe(200);
    expect(await text(r.body)).toBe('got {"paths":["a"]}');
    expect(s.seen).toEqual([{ method: 'POST', url: '/api/x', type: 'application/json', length: '15', body: '{"paths":["a"]}' }]);
  });

  it('a 303 is followed with a GET without the body; a 307 keeps the method and the body', async () => {
    const s = await server((q, res) => {
      if (q.url === '/see-other') res.writeHead(303, { location: '/after-303' }).end();
      else if (q.url === '/temporary') res.writeHead(307, { location: '/after-307' }).end();
      else res.end(`${q.method} ${q.url} ${q.body}`);
    });
    const budget = new ConnectionBudget(4);
    expect(await text((await post(s.url('/see-other'), 'B', budget)).body)).toBe('GET /after-303 ');
    expect(s.seen[1]).toMatchObject({ method: 'GET', type: undefined, body: '' });
    expect(await text((await post(s.url('/temporary'), 'B', budget)).body)).toBe('POST /after-307 B');
  });

  it('is sent again, whole, when the kept-alive connection it took had been closed by the server', async () => {
    const s = await server((q, res) => res.end(`${q.method} ${q.body}`));
    const budget = new ConnectionBudget(4);
    expect(await text((await post(s.url('/a'), 'first', budget)).body)).toBe('POST first');
    // The server drops its idle connections: ours is in the idle pool, closed at the far end.
    s.server.closeIdleConnections();
    expect(await text((await post(s.url('/a'), 'second', budget)).body)).toBe('POST second');
    expect(s.seen.map((q) => q.body)).toEqual(['first', 'second']);
  });
});
