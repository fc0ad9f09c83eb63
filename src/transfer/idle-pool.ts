import type { WireConn } from './wire-conn.js';

/** Servers drop idle keep-alive connections after ~5 s (Node's default): let ours go a little sooner. */
const IDLE_KEEP_MS = 4000;

interface Idle {
  readonly conn: WireConn;
  readonly timer: NodeJS.Timeout;
}

/**
 * Kept-alive connections by route (proxy + origin), reused across requests and files of one
 * budget. At most `maxPerRoute` wait per route: more idle connections than the budget can use
 * at once are never useful.
 */
export class IdlePool {
  private readonly routes = new Map<string, Idle[]>();

  constructor(private readonly maxPerRoute: number) {}

  /** A live idle connection to `route`, or undefined. */
  take(route: string): WireConn | undefined {
    const list = this.routes.get(route);
    for (let idle = list?.pop(); idle; idle = list?.pop()) {
      clearTimeout(idle.timer);
      if (idle.conn.alive) return idle.conn;
    }
    return undefined;
  }

  /** A connection whose exchange ended cleanly: kept for a while, or closed when the route has enough. */
  keep(route: string, conn: WireConn): void {
    let list = this.routes.get(route);
    if (!list) this.routes.set(route, (list = []));
    if (list.length >= this.maxPerRoute) {
      conn.destroy();
      return;
    }
    const timer = setTimeout(() => conn.destroy(), IDLE_KEEP_MS);
    timer.unref();
    list.push({ conn, timer });
  }

  /** Idle connections waiting on `route`. */
  count(route: string): number {
    return this.routes.get(route)?.length ?? 0;
  }

  /** A connection that died (while idle or not): forgotten. */
  drop(route: string, conn: WireConn): void {
    const list = this.routes.get(route);
    const i = list?.findIndex((x) => x.conn === conn) ?? -1;
    if (list && i >= 0) {
      clearTimeout(list[i]?.timer);
      list.splice(i, 1);
    }
  }
}
