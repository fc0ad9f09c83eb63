import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { ModelsyncError } from '../errors.js';
import { redactUrl } from '../redact.js';

export interface HttpRequest {
  readonly url: string;
  readonly method?: 'GET' | 'HEAD';
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
  readonly body: IncomingMessage;
}

// Keep-alive saves a TLS handshake per chunk; sockets are per host, so the budget is the caller's.
const agents = {
  'http:': new http.Agent({ keepAlive: true, maxSockets: 256 }),
  'https:': new https.Agent({ keepAlive: true, maxSockets: 256 }),
};

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * One HTTP request, redirects followed by hand: undici's fetch keeps custom auth headers across
 * hosts, so auth is ours to drop. https -> http is refused. The idle timeout covers waiting for
 * headers and every gap in the body (a stalled server keeps the socket open forever otherwise).
 */
export async function httpRequest(req: HttpRequest): Promise<HttpResponse> {
  const max = req.maxRedirects ?? 10;
  const hops: Hop[] = [];
  let url = new URL(req.url);
  const firstHost = url.host;
  for (;;) {
    const sameHost = url.host === firstHost;
    const res = await once(url, req, sameHost ? req.authorization : undefined);
    const location = res.headers.location;
    if (req.followRedirects === false || !REDIRECTS.has(res.statusCode ?? 0) || location === undefined) {
      return { status: res.statusCode ?? 0, headers: res.headers, url: url.toString(), hops, body: res };
    }
    res.resume();
    hops.push({ url: url.toString(), status: res.statusCode ?? 0, headers: res.headers });
    if (hops.length > max) {
      throw new ModelsyncError('E_REDIRECT', `more than ${max} redirects from ${redactUrl(req.url)}`, { url: redactUrl(req.url) });
    }
    const next = new URL(location, url);
    if (url.protocol === 'https:' && next.protocol !== 'https:') {
      throw new ModelsyncError('E_INSECURE_REDIRECT', `refused redirect from https to ${next.protocol} (${redactUrl(next)})`, { url: redactUrl(url) });
    }
    if (next.protocol !== 'https:' && next.protocol !== 'http:') {
      throw new ModelsyncError('E_REDIRECT', `redirect to unsupported scheme ${next.protocol}`, { url: redactUrl(url) });
    }
    url = next;
  }
}

function once(url: URL, req: HttpRequest, authorization: string | undefined): Promise<IncomingMessage> {
  const headers: Record<string, string> = {
    'accept-encoding': 'identity',
    'user-agent': 'modelsync/0.1',
    ...req.headers,
  };
  if (authorization !== undefined) headers.authorization = authorization;
  if (req.range) headers.range = `bytes=${req.range.start}-${req.range.end - 1}`;
  const mod = url.protocol === 'https:' ? https : http;
  const agent = url.protocol === 'https:' ? agents['https:'] : agents['http:'];
  return new Promise((resolve, reject) => {
    if (req.signal?.aborted) {
      reject(abortError(url, req.signal.reason));
      return;
    }
    let settled = false;
    let response: IncomingMessage | undefined;
    const r = mod.request(url, { method: req.method ?? 'GET', headers, agent }, (res) => {
      settled = true;
      response = res;
      // The idle timer stays armed on the socket for the body; callers see it as a stream error.
      resolve(res);
    });
    const onAbort = (): void => {
      r.destroy(abortError(url, req.signal?.reason));
    };
    // Stays attached for the request's whole life: once the response has arrived, a destroy()
    // surfaces as an error on the body stream, and an unheard 'error' here would crash the process.
    r.on('error', (e: Error) => {
      req.signal?.removeEventListener('abort', onAbort);
      if (!settled) {
        settled = true;
        reject(networkError(e, url));
      }
    });
    r.setTimeout(req.idleTimeoutMs, () => {
      const err = new ModelsyncError('E_TIMEOUT', `no data from ${url.host} for ${req.idleTimeoutMs} ms`, { url: redactUrl(url), retryable: true });
      // Destroy the body with our error first, or its reader only sees a generic "aborted".
      response?.destroy(err);
      r.destroy(err);
    });
    req.signal?.addEventListener('abort', onAbort, { once: true });
    r.on('close', () => req.signal?.removeEventListener('abort', onAbort));
    r.end();
  });
}

function abortError(url: URL, reason: unknown): ModelsyncError {
  return new ModelsyncError('E_ABORTED', `request to ${url.host} aborted`, { url: redactUrl(url), cause: reason });
}

/** Turn a socket-level failure into a typed error that names the host and carries no secret. */
export function networkError(e: unknown, url: URL | string): ModelsyncError {
  if (e instanceof ModelsyncError) return e;
  const u = typeof url === 'string' ? new URL(url) : url;
  const code = typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : '';
  const permanent = ['ENOTFOUND', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'ERR_TLS_CERT_ALTNAME_INVALID'];
  const what = code === 'ENOTFOUND' ? 'cannot resolve host' : code.includes('CERT') ? 'TLS certificate rejected for' : 'network error talking to';
  return new ModelsyncError('E_NETWORK', `${what} ${u.host}${code ? ` (${code})` : ''}`, {
    url: redactUrl(u),
    retryable: !permanent.includes(code),
    cause: e,
  });
}

/** Milliseconds from a Retry-After header (seconds or an HTTP date). */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const secs = Number(value);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** An error for a non-success answer; the body is drained so the socket can be reused. */
export function statusError(res: HttpResponse, what: string): ModelsyncError {
  res.body.resume();
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
