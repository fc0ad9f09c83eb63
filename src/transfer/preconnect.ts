import { proxyFor } from '../proxy/proxy-for.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import type { ConnectionBudget } from './budget.js';
import { openConn, routeOf } from './wire.js';

export interface PreconnectOptions {
  /** HTTPS_PROXY / HTTP_PROXY / NO_PROXY: a connection opened ahead goes the way its requests will. */
  readonly proxies: ProxySettings | undefined;
  readonly idleTimeoutMs: number;
}

/** Opens in flight, by budget and route: a second call while the first's are connecting tops up, never doubles. */
const opening = new WeakMap<ConnectionBudget, Map<string, number>>();

/**
 * Open up to `count` connections to `origin` before any request wants them, and leave them idle
 * in the budget's pool, where the requests to that origin (of every file) take them: DNS, TCP,
 * TLS and a proxy's CONNECT then happen while the Hub lookups run, not in front of the first
 * ranged GET. Never beyond the budget's --connections in all, nor past what `origin` already has
 * idle. A connection that cannot be opened is let go quietly: the request that would have used
 * it opens its own, and that one reports what is wrong.
 */
export function preconnect(budget: ConnectionBudget, origin: URL, count: number, opts: PreconnectOptions): void {
  const proxy = opts.proxies === undefined ? undefined : proxyFor(opts.proxies, origin);
  const route = routeOf(origin, proxy);
  let byRoute = opening.get(budget);
  if (!byRoute) opening.set(budget, (byRoute = new Map()));
  const pending = byRoute.get(route) ?? 0;
  const want = Math.min(count - budget.idle.count(route) - pending, budget.connections - budget.openConnections - pending);
  for (let i = 0; i < want; i++) {
    byRoute.set(route, (byRoute.get(route) ?? 0) + 1);
    openConn({ url: origin, proxy, idleTimeoutMs: opts.idleTimeoutMs, signal: undefined }, route, budget)
      .then(
        (conn) => {
          conn.parkFresh();
          budget.idle.keep(route, conn);
        },
        () => undefined,
      )
      .finally(() => byRoute.set(route, Math.max(0, (byRoute.get(route) ?? 1) - 1)));
  }
}
