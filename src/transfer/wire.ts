import type { IncomingHttpHeaders } from 'node:http';
import { ModelsyncError } from '../errors.js';
import type { BodyReader } from './body-reader.js';
import type { ProxyEndpoint } from '../proxy/proxy-settings.js';
import type { ConnectionBudget } from './budget.js';
import { StaleConnection, WireConn, type WireRequest } from './wire-conn.js';

export interface WireResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: BodyReader;
}

/**
 * One GET (or a POST that only reads: it may be sent again) over a kept-alive connection to the URL's origin (a new one when none is idle). A
 * connection that turns out to have been closed by the server while idle is replaced silently:
 * that failure says nothing about the request.
 */
export async function wireRequest(req: WireRequest, budget: ConnectionBudget): Promise<WireResponse> {
  for (const [k, v] of Object.entries(req.headers)) {
    if (/[\r\n]/.test(v) || !/^[a-z0-9-]+$/.test(k)) throw new ModelsyncError('E_CONFIG', `header ${k} has a line break or a bad name`);
  }
  const key = routeOf(req.url, req.proxy);
  for (;;) {
    const pooled = budget.idle.take(key);
    const conn = pooled ?? (await openConn(req, key, budget));
    try {
      const { head, body } = await conn.exchange(req);
      return { status: head.status, headers: head.headers, body };
    } catch (e) {
      if (pooled && e instanceof StaleConnection) continue;
      throw e;
    }
  }
}

/** A new connection of `budget` for `route`: kept idle when its exchange ends cleanly, counted while open. */
export async function openConn(req: Pick<WireRequest, 'url' | 'proxy' | 'idleTimeoutMs' | 'signal'>, route: string, budget: ConnectionBudget): Promise<WireConn> {
  const conn = await WireConn.open(
    req.url,
    req.proxy,
    (c) => budget.idle.keep(route, c),
    (c) => {
      budget.idle.drop(route, c);
      budget.closed();
    },
    { timeoutMs: req.idleTimeoutMs, signal: req.signal, receiveBlockSize: budget.receiveBlockSize },
  );
  budget.opened();
  return conn;
}

/** The idle pool's key: by route too, so a tunnel is reused only for the target it was opened to, and never for a direct request. */
export function routeOf(url: URL, proxy: ProxyEndpoint | undefined): string {
  return `${proxy?.name ?? 'direct'} ${url.protocol}//${url.host}`;
}
