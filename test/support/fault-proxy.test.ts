import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { rawRequest } from './http-get.js';

const BODY = Buffer.alloc(200_000, 'modelsync');
let target: Server;
let port: number;
let proxy: FaultProxy | undefined;

beforeAll(async () => {
  target = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': BODY.length });
    res.end(BODY);
  });
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  port = (target.address() as AddressInfo).port;
});

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

afterAll(async () => {
  target.closeAllConnections();
  await new Promise((r) => target.close(r));
});

describe('fault proxy', () => {
  it('passes bytes through and counts them', async () => {
    proxy = await startFaultProxy({ host: '127.0.0.1', port });
    const res = await rawRequest(proxy.url);
    expect(res.body.equals(BODY)).toBe(true);
    expect(proxy.bytesForwarded).toBeGreaterThan(BODY.length);
  });

  it('truncates with a FIN after N bytes, once, then passes again', async () => {
    proxy = await startFaultProxy({ host: '127.0.0.1', port }, { kind: 'truncate-after', bytes: 5000, times: 1 });
    const cut = await rawRequest(proxy.url);
    expect(cut.error).toBeDefined();
    expect(cut.body.length).toBeLessThan(5000);
    expect(proxy.bytesForwarded).toBe(5000);
    const whole = await rawRequest(proxy.url);
    expect(whole.body.equals(BODY)).toBe(true);
  });

  it('resets the connection', async () => {
    proxy = await startFaultProxy({ host: '127.0.0.1', port }, { kind: 'reset-after', bytes: 5000, times: 1 });
    const res = await rawRequest(proxy.url).catch((err: NodeJS.ErrnoException) => err);
    const code = res instanceof Error ? res.code : (res.error as NodeJS.ErrnoException | undefined)?.code ?? res.error?.message;
    expect(code).toMatch(/ECONNRESET|aborted/);
  });

  it('stalls with the socket held open, and slows when told to', async () => {
    proxy = await startFaultProxy({ host: '127.0.0.1', port }, { kind: 'stall-after', bytes: 3000, times: 1 });
    const stalled = await rawRequest(proxy.url, { timeoutMs: 300 });
    expect(stalled.error?.message).toBe('timeout');
    expect(proxy.bytesForwarded).toBe(3000);

    proxy.mode = { kind: 'slow', bytesPerSecond: 1_000_000 };
    const t0 = Date.now();
    const slow = await rawRequest(proxy.url);
    expect(slow.body.equals(BODY)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
  });
});
