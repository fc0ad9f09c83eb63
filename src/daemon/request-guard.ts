import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { ModelsyncError } from '../errors.js';
import { BearerToken } from './bearer-token.js';

/**
 * Who may talk to an HTTP endpoint modelsync serves on this machine (the control API, and any
 * later server that starts work or proxies ComfyUI): its own callers, never a web page.
 *
 * - `Host` must name this server: `localhost`, a loopback address, the bound address, or, bound
 *   to a wildcard, one of this machine's addresses. DNS rebinding points a name the attacker
 *   owns at 127.0.0.1; the browser then sends that name as `Host`, so it is refused here.
 * - `Origin`, when sent, must be the server's own (`http://` + the `Host` it was asked as). A
 *   page elsewhere (another port on localhost included: ComfyUI's own frontend) is refused, and
 *   so is `Sec-Fetch-Site: cross-site / same-site`, which browsers send even on plain GETs.
 * - A request with a body must say `application/json` (option `bodies: 'json'`): a form or a
 *   text/plain POST is a "simple" request that a browser sends without asking first.
 * - With a token configured, `Authorization: Bearer TOKEN` is required (compared in constant
 *   time) on every path but the public ones; a missing and a wrong token get the same 401.
 *
 * Nothing is answered with CORS headers, so a browser never lets a page read an answer either.
 */
export interface RequestGuardOptions {
  /** The address the server is bound to, as configured (a wildcard, an address or a name). */
  readonly host: string;
  /** Bearer token; undefined: none required. */
  readonly token: string | undefined;
  /** Paths (GET/HEAD) answered without the token: health probes cannot carry a secret. */
  readonly publicPaths?: ReadonlySet<string>;
  /** 'json': a body must be application/json; 'any': its type is the handler's business. */
  readonly bodies?: 'json' | 'any';
}

export type GuardVerdict =
  | { readonly ok: true; readonly authenticated: boolean }
  | { readonly ok: false; readonly status: 400 | 401 | 403 | 415; readonly reason: string };

const WILDCARDS = new Set(['', '0.0.0.0', '::']);

/** Is this bind address reachable from this machine only? (A name other than localhost is not assumed to be.) */
export function isLoopbackHost(host: string): boolean {
  const h = normalHost(host);
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1' || /^::ffff:127\./.test(h);
}

/**
 * A server bound beyond loopback without a token would take orders from the network: refused
 * before it listens (exit 2). `what` names the setting in the message.
 */
export function requireTokenBeyondLoopback(host: string, port: number, token: string | undefined, what: string): void {
  if (token !== undefined || isLoopbackHost(host)) return;
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  throw new ModelsyncError(
    'E_USAGE',
    `${what} ${where} listens beyond loopback: set MODELSYNC_CONTROL_TOKEN (its callers then send "Authorization: Bearer TOKEN"; /healthz and /readyz stay open to probes), or bind it to 127.0.0.1`,
  );
}

export class RequestGuard {
  private readonly token: BearerToken | undefined;
  private readonly publicPaths: ReadonlySet<string>;

  constructor(private readonly opts: RequestGuardOptions) {
    this.token = opts.token === undefined ? undefined : new BearerToken(opts.token);
    this.publicPaths = opts.publicPaths ?? new Set();
  }

  check(req: IncomingMessage, path: string): GuardVerdict {
    const hosts = req.rawHeaders.filter((_, i) => i % 2 === 0 && req.rawHeaders[i]?.toLowerCase() === 'host');
    const host = req.headers.host;
    if (hosts.length !== 1 || host === undefined) return refuse(400, 'exactly one Host header is required');
    const asked = parseAuthority(host);
    if (!asked || !this.hostAllowed(asked.hostname)) return refuse(403, `Host ${clip(host)} is not this server`);

    const origin = req.headers.origin;
    if (origin !== undefined && !sameOrigin(origin, asked)) return refuse(403, `Origin ${clip(origin)} is not this server's own`);
    const site = header(req, 'sec-fetch-site');
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return refuse(403, `a ${clip(site)} request from a web page`);

    if ((this.opts.bodies ?? 'json') === 'json' && hasBody(req)) {
      const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== 'application/json') return refuse(415, `a request body must be application/json, got ${type === '' || type === undefined ? 'no Content-Type' : clip(type)}`);
    }

    if (this.token === undefined) return { ok: true, authenticated: false };
    const authenticated = this.token.inHeader(req.headers.authorization);
    if (authenticated) return { ok: true, authenticated: true };
    const read = req.method === 'GET' || req.method === 'HEAD';
    if (read && this.publicPaths.has(path)) return { ok: true, authenticated: false };
    return refuse(401, 'no valid bearer token');
  }

  private hostAllowed(hostname: string): boolean {
    if (isLoopbackHost(hostname)) return true;
    const bound = normalHost(this.opts.host);
    if (!WILDCARDS.has(bound)) return hostname === bound;
    // Bound to every interface: each address this machine has (a probe sent to the pod's IP).
    // Asked each time: addresses come and go (DHCP, a container's network joined later).
    if (isIP(hostname) === 0) return false;
    return Object.values(networkInterfaces()).some((list) => list?.some((a) => normalHost(a.address) === hostname));
  }
}

/** Write a guard's refusal: a bare status line, nothing an attacker could learn from. */
export function answerRefusal(res: ServerResponse, v: Extract<GuardVerdict, { ok: false }>): void {
  const text = v.status === 401 ? 'unauthorized\n' : v.status === 415 ? 'unsupported media type: send application/json or no body\n' : v.status === 400 ? 'bad request\n' : 'forbidden\n';
  const headers: Record<string, string | number> = { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', connection: 'close' };
  if (v.status === 401) headers['www-authenticate'] = 'Bearer realm="modelsync"';
  res.writeHead(v.status, headers);
  res.end(res.req.method === 'HEAD' ? undefined : text);
}

function refuse(status: 400 | 401 | 403 | 415, reason: string): GuardVerdict {
  return { ok: false, status, reason };
}

/** Lower case, no brackets, no zone, no trailing dot: `[::1]` -> `::1`, `LocalHost.` -> `localhost`. */
function normalHost(h: string): string {
  return h.trim().toLowerCase().replace(/^\[|\]$/g, '').replace(/%.*$/, '').replace(/\.$/, '');
}

interface Authority {
  readonly hostname: string;
  readonly port: string;
}

/** `host[:port]` as a Host header carries it; undefined when it is not one. */
function parseAuthority(raw: string): Authority | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/@\s]+)(?::(\d{1,5}))?$/.exec(raw.trim());
  if (!m) return undefined;
  return { hostname: normalHost(m[1] ?? ''), port: m[2] ?? '80' };
}

function sameOrigin(origin: string, asked: Authority): boolean {
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false;
  }
  // "null" (a sandboxed frame, a file:// page) parses as no URL at all and is refused above.
  if (u.protocol !== 'http:' || u.origin !== origin.replace(/\/$/, '').toLowerCase()) return false;
  return normalHost(u.hostname) === asked.hostname && (u.port === '' ? '80' : u.port) === asked.port;
}

function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const len = req.headers['content-length'];
  return len !== undefined && len.trim() !== '0';
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v.trim().toLowerCase() : undefined;
}

/** Attacker-supplied text in a log line: bounded, and JSON-escaped by the logger. */
function clip(s: string): string {
  return JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}...` : s);
}
