import type { IncomingHttpHeaders } from 'node:http';
import { ModelsyncError } from '../errors.js';
import type { BodyReader } from './body-reader.js';
import { StaleConnection, WireConn, type WireRequest } from './wire-conn.js';

export interface WireResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: BodyReader;
}

/** Servers drop idle keep-alive connections after ~5 s (Node's default): let ours go a little sooner. */
const IDLE_KEEP_MS = 4000;
/** Idle connections kept per origin; more than the connection budget is never useful. */
const MAX_IDLE = 64;

interface Idle {
  readonly conn: WireConn;
  readonly timer: NodeJS.Timeout;
}

const pool = new Map<string, Idle[]>();

/**
 * One GET over a kept-alive connection to the URL's origin (a new one when none is idle). A
 * connection that turns out to have been closed by the server while idle is replaced silently:
 * that failure says nothing about the request.
 */
export async function wireRequest(req: WireRequest): Promise<WireResponse> {
  for (const [k, v] of Object.entries(req.headers)) {
    if (/[\r\n]/.test(v) || !/^[a-z0-9-]+$/.test(k)) throw new ModelsyncError('E_CONFIG', `header ${k} has a line break or a bad name`);
  }
  // By route too: a tunnel is reused only for the target it was opened to, and never for a direct request.
  const key = `${req.proxy?.name ?? 'direct'} ${req.url.protocol}//${req.url.host}`;
  for (;;) {
    const pooled = take(key);
    const conn = pooled ?? (await WireConn.open(req.url, req.proxy, (c) => keep(key, c), (c) => drop(key, c), { timeoutMs: req.idleTimeoutMs, signal: req.signal }));
    try {
      const { head, body } = await conn.exchange(req);
      return { status: head.status, headers: head.headers, body };
    } catch (e) {
      if (pooled && e instanceof StaleConnection) continue;
      throw e;
    }
  }
}

function take(key: string): WireConn | undefined {
  const list = pool.get(key);
  for (let idle = list?.pop(); idle; idle = list?.pop()) {
    clearTimeout(idle.timer);
    if (idle.conn.alive) return idle.conn;
  }
  return undefined;
}

function keep(key: string, conn: WireConn): void {
  let list = pool.get(key);
  if (!list) pool.set(key, (list = []));
  if (list.length >= MAX_IDLE) {
    conn.destroy();
    return;
  }
  const timer = setTimeout(() => conn.destroy(), IDLE_KEEP_MS);
  timer.unref();
  list.push({ conn, timer });
}

function drop(key: string, conn: WireConn): void {
  const list = pool.get(key);
  const i = list?.findIndex((x) => x.conn === conn) ?? -1;
  if (list && i >= 0) {
    clearTimeout(list[i]?.timer);
    list.splice(i, 1);
  }
}
