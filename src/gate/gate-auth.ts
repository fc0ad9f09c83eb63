import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BearerToken } from '../daemon/bearer-token.js';
import { RequestGuard } from '../daemon/request-guard.js';
import { readBody } from './read-body.js';

/**
 * Who may make the gate download: what ComfyUI would answer is ComfyUI's business, but a
 * request that starts a download (a prompt naming a model that is not on disk, the frontend's
 * download API) must come from someone entitled to it.
 *
 * - Without MODELSYNC_CONTROL_TOKEN (the gate then listens on loopback only): this machine's own
 *   callers, judged like the control API's (request-guard.ts): Host names this server (DNS
 *   rebinding), Origin is the gate's own, no cross-site fetch.
 * - With it: `Authorization: Bearer TOKEN` (API clients, serverless handlers), or, for people
 *   using ComfyUI's page through the gate, a session cookie the gate sets once the token has
 *   been typed into its login page (/modelsync/login). A browser sends a cookie on its own, so
 *   one is honoured only on a same-origin request: Origin, when sent, must be the address the
 *   page was asked as, and Sec-Fetch-Site, when sent, same-origin. SameSite=Strict keeps other
 *   sites' pages from sending it at all.
 *
 * The token and the cookie are removed from every request before it is relayed: ComfyUI and its
 * custom nodes never see them.
 */

export const SESSION_COOKIE = 'modelsync_gate';
export const LOGIN_PATH = '/modelsync/login';
const MAX_LOGIN_BODY = 4096;

export type AuthVerdict = { readonly ok: true } | { readonly ok: false; readonly status: 401 | 403; readonly reason: string };

export class GateAuth {
  private readonly guard: RequestGuard;
  private readonly bearer: BearerToken | undefined;
  private readonly session: string | undefined;

  constructor(host: string, private readonly token: string | undefined) {
    this.guard = new RequestGuard({ host, token: undefined, bodies: 'any' });
    this.bearer = token === undefined ? undefined : new BearerToken(token);
    // Derived from the token, never the token itself: a browser's cookie jar is not a secret store.
    this.session = token === undefined ? undefined : createHmac('sha256', token).update('modelsync gate session v1').digest('hex');
  }

  get required(): boolean {
    return this.token !== undefined;
  }

  mayDownload(req: IncomingMessage, path: string): AuthVerdict {
    if (this.bearer === undefined) {
      const v = this.guard.check(req, path);
      return v.ok ? { ok: true } : { ok: false, status: v.status === 401 ? 401 : 403, reason: v.reason };
    }
    if (this.bearerMatches(req.headers.authorization)) return { ok: true };
    if (!this.sessionMatches(req)) return { ok: false, status: 401, reason: 'no valid bearer token or session' };
    const site = header(req, 'sec-fetch-site');
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return { ok: false, status: 403, reason: `a ${site} request carrying the session cookie` };
    const origin = req.headers.origin;
    if (origin !== undefined && !originMatchesHost(origin, req.headers.host, req)) return { ok: false, status: 403, reason: 'the session cookie on a request from another origin' };
    return { ok: true };
  }

  /** Remove our bearer token and session cookie from a request about to be relayed. */
  stripCredentials(req: IncomingMessage): void {
    if (this.bearerMatches(req.headers.authorization)) delete req.headers.authorization;
    const cookie = req.headers.cookie;
    if (cookie === undefined) return;
    const kept = cookie
      .split(';')
      .map((c) => c.trim())
      .filter((c) => c !== '' && !c.startsWith(`${SESSION_COOKIE}=`));
    if (kept.length === 0) delete req.headers.cookie;
    else req.headers.cookie = kept.join('; ');
  }

  /** GET and POST /modelsync/login (and POST /modelsync/logout): true when answered here. */
  handleLogin(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    if (path === '/modelsync/logout' && req.method === 'POST') {
      req.resume();
      res.writeHead(303, { location: '/', 'set-cookie': `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`, 'content-length': 0 });
      res.end();
      return true;
    }
    if (path !== LOGIN_PATH) return false;
    if (req.method === 'GET' || req.method === 'HEAD') {
      page(res, 200, this.token === undefined ? 'This gate needs no login: it answers this machine only.' : '', this.token !== undefined);
      return true;
    }
    if (req.method !== 'POST') {
      req.resume();
      res.writeHead(405, { allow: 'GET, POST', 'content-length': 0 });
      res.end();
      return true;
    }
    void this.login(req, res);
    return true;
  }

  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req, MAX_LOGIN_BODY);
    if (raw === 'aborted') return;
    if (raw === 'too-large') {
      res.writeHead(413, { connection: 'close', 'content-length': 0 });
      res.end();
      return;
    }
    const given = new URLSearchParams(raw.toString('utf8')).get('token') ?? '';
    const origin = req.headers.origin;
    if (this.session === undefined || this.bearer?.is(given) !== true || (origin !== undefined && !originMatchesHost(origin, req.headers.host, req))) {
      page(res, 401, 'That is not the token.', this.token !== undefined);
      return;
    }
    const secure = header(req, 'x-forwarded-proto') === 'https' ? '; Secure' : '';
    res.writeHead(303, { location: '/', 'set-cookie': `${SESSION_COOKIE}=${this.session}; Path=/; HttpOnly; SameSite=Strict${secure}`, 'content-length': 0, 'cache-control': 'no-store' });
    res.end();
  }

  private bearerMatches(authorization: string | undefined): boolean {
    return this.bearer?.inHeader(authorization) === true;
  }

  private sessionMatches(req: IncomingMessage): boolean {
    if (this.session === undefined) return false;
    const want = Buffer.from(this.session);
    for (const c of (req.headers.cookie ?? '').split(';')) {
      const [k, v] = c.trim().split('=', 2);
      if (k === SESSION_COOKIE && v !== undefined && v.length === want.length && timingSafeEqual(Buffer.from(v), want)) return true;
    }
    return false;
  }
}

/**
 * Is `origin` the address this request was made to? Behind a TLS proxy the page is https and the
 * gate plain http, so the scheme only decides which port is the default one.
 */
function originMatchesHost(origin: string, host: string | undefined, req: IncomingMessage): boolean {
  if (host === undefined) return false;
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return false;
  if (req.rawHeaders.filter((_, i) => i % 2 === 0 && req.rawHeaders[i]?.toLowerCase() === 'host').length !== 1) return false;
  const dflt = u.protocol === 'https:' ? ':443' : ':80';
  const asked = host.trim().toLowerCase().replace(new RegExp(`${dflt}$`), '');
  return u.host.toLowerCase() === asked;
}

function page(res: ServerResponse, status: number, note: string, form: boolean): void {
  const body = [
    '<!doctype html><meta charset="utf-8"><title>modelsync gate</title>',
    '<h1>modelsync gate</h1>',
    note === '' ? '' : `<p>${note}</p>`,
    form
      ? `<form method="post" action="${LOGIN_PATH}"><label>Token (MODELSYNC_CONTROL_TOKEN) <input type="password" name="token" autocomplete="current-password" required></label> <button>Log in</button></form><p>Once logged in, ComfyUI's page may download models through this gate.</p>`
      : '',
    '',
  ].join('\n');
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', 'x-frame-options': 'DENY' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v.trim().toLowerCase() : undefined;
}
