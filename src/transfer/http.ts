import type { IncomingHttpHeaders } from 'node:http';
import { ModelsyncError } from '../errors.js';
import { proxyAuthRequired } from '../proxy/proxy-errors.js';
import { proxyFor } from '../proxy/proxy-for.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import { redactUrl } from '../redact.js';
import type { BodyReader } from './body-reader.js';
import type { ConnectionBudget } from './budget.js';
import { MAX_REDIRECTS, redirectTarget } from './redirect-policy.js';
import { wireRequest } from './wire.js';

export interface HttpRequest {
  readonly url: string;
  /**
   * GET unless told. A POST must only read (the Hub's paths-info): it is sent again on a
   * kept-alive connection the server had closed. A 301, 302 or 303 turns it into a GET without
   * its body, as fetch does (RFC 9110 15.4); a 307 or 308 keeps both.
   */
  readonly method?: 'GET' | 'POST' | undefined;
  readonly body?: Buffer | undefined;
  /** Sent to the first host only: dropped as soon as a redirect leaves it. */
  readonly authorization?: string | undefined;
  readonly headers?: Readonly<Record<string, string>>;
  /** Byte range [start, end) to ask for. */
  readonly range?: { readonly start: number; readonly end: number } | undefined;
  readonly idleTimeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  readonly maxRedirects?: number;
  /** When false, a 3xx is returned to the caller instead of followed. */
  readonly followRedirects?: boolean;
  /** Called with each redirect before it is followed; what it throws ends the request there. */
  readonly beforeRedirect?: ((hop: Hop, index: number) => void) | undefined;
  /** Called with each redirect's target once redirectTarget has allowed it, before it is asked. */
  readonly redirected?: ((to: URL, index: number) => void) | undefined;
  /** HTTPS_PROXY / HTTP_PROXY / NO_PROXY, applied to every hop; undefined: always direct. */
  readonly proxies?: ProxySettings | undefined;
  /** Whose kept-alive connections (and receive memory) the request uses. */
  readonly connections: ConnectionBudget;
}

export interface Hop {
  readonly url: string;
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** Where the body came from, after redirects. */
  readonly url: string;
  /** The redirects answered on the way, in order (the Hub puts X-Linked-Etag on its 302). */
  readonly hops: readonly Hop[];
  readonly body: BodyReader;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * One request, redirects followed by hand: auth is dropped once a redirect leaves the first
 * host, and where a redirect may lead is redirectTarget's rule. The idle timeout covers waiting
 * for headers and every gap in the body (a stalled server keeps the socket open forever
 * otherwise).
 */
export async function httpRequest(req: HttpRequest): Promise<HttpResponse> {
  const max = req.maxRedirects ?? MAX_REDIRECTS;
  const hops: Hop[] = [];
  let url = new URL(req.url);
  const firstHost = url.host;
  let asked = req;
  for (;;) {
    const sameHost = url.host === firstHost;
    const res = await once(url, asked, sameHost ? req.authorization : undefined);
    const location = res.headers.location;
    if (req.followRedirects === false || !REDIRECTS.has(res.status) || location === undefined) {
      return { status: res.status, headers: res.headers, url: url.toString(), hops, body: res.body };
    }
    res.body.discard();
    const hop = { url: url.toString(), status: res.status, headers: res.headers };
    req.beforeRedirect?.(hop, hops.length);
    hops.push(hop);
    if (hops.length > max) {
      throw new ModelsyncError('E_REDIRECT', `more than ${max} redirects from ${redactUrl(req.url)}`, { url: redactUrl(req.url) });
    }
    url = redirectTarget(url, location);
    req.redirected?.(url, hops.length - 1);
    if (asked.method === 'POST' && res.status !== 307 && res.status !== 308) {
      const headers = { ...asked.headers };
      delete headers['content-type'];
      asked = { ...asked, method: 'GET', body: undefined, headers };
    }
  }
}

async function once(url: URL, req: HttpRequest, authorization: string | undefined): ReturnType<typeof wireRequest> {
  const headers: Record<string, string> = {
    'accept-encoding': 'identity',
    'user-agent': 'modelsync/0.1',
    ...req.headers,
  };
  if (authorization !== undefined) headers.authorization = authorization;
  if (req.range) headers.range = `bytes=${req.range.start}-${req.range.end - 1}`;
  const proxy = req.proxies === undefined ? undefined : proxyFor(req.proxies, url);
  const res = await wireRequest({ url, method: req.method, body: req.body, headers, idleTimeoutMs: req.idleTimeoutMs, signal: req.signal, proxy }, req.connections);
  // Sent to an http:// proxy in absolute form, a 407 is the proxy's own answer, not the server's.
  if (res.status === 407 && proxy !== undefined && url.protocol === 'http:') {
    res.body.discard();
    throw proxyAuthRequired(proxy, url.host);
  }
  return res;
}

/**
 * Milliseconds from a Retry-After header: delay-seconds (digits; a fraction of up to three
 * places is tolerated, to whole milliseconds) or an HTTP-date, in the three forms RFC 9110 5.6.7
 * accepts (`Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT`,
 * `Sun Nov  6 08:49:37 1994`). Anything else is no answer, not "now": Number('') is 0, '0x10'
 * and '1e3' are 16 and 1000, '5e-324' a wait of 5e-321 ms, and Date.parse reads '-5' or '2.5'
 * as dates.
 */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d{1,10}(\.\d{1,3})?$/.test(v)) return Math.round(Number(v) * 1000);
  if (!/^[A-Za-z]{3,9},? [\dA-Za-z -]+ \d{2}:\d{2}:\d{2}( GMT| \d{4})$/.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** An error for a non-success answer; the body is drained so the socket can be reused. */
export function statusError(res: HttpResponse, what: string): ModelsyncError {
  res.body.discard();
  const s = res.status;
  const retryable = s === 408 || s === 429 || s >= 500;
  const ra = s === 429 || s === 503 ? parseRetryAfter(headerValue(res.headers, 'retry-after')) : undefined;
  return new ModelsyncError(s === 429 ? 'E_RATE_LIMITED' : 'E_HTTP', `${what}: HTTP ${s} from ${redactUrl(res.url)}`, {
    url: redactUrl(res.url),
    status: s,
    retryable,
    ...(ra === undefined ? {} : { retryAfterMs: ra }),
  });
}

export function headerValue(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}
