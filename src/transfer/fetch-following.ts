import { ModelsyncError } from '../errors.js';
import { redactUrl } from '../redact.js';
import { RateFloor, type RateRule } from './rate-floor.js';
import { MAX_REDIRECTS, redirectTarget } from './redirect-policy.js';

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** The deadlines of a fetch: its head within the idle timeout, its body at the minimum rate. */
export interface FetchBounds {
  readonly idleTimeoutMs: number;
  readonly rate: RateRule;
}

/**
 * fetch with our redirect rules and deadlines, for what we cannot route through httpRequest (the
 * Hub's metadata API, called by @huggingface/hub): redirects followed by hand (fetch would follow
 * a loopback mirror's redirect to plain http anywhere), each one checked by redirectTarget, the
 * Authorization header dropped once the origin changes, at most MAX_REDIRECTS of them; method and
 * body changed as fetch itself would (RFC 9110 15.4). fetch's own timeouts are five minutes for
 * the head and for each gap in the body, and none for a body that trickles: `bounds` holds the
 * head to the idle timeout and the body to the minimum rate, as every download is.
 */
export async function fetchFollowing(input: string | URL | Request, init: RequestInit = {}, bounds?: FetchBounds, base: typeof fetch = fetch): Promise<Response> {
  if (input instanceof Request) throw new Error('fetchFollowing takes a URL, not a Request');
  const first = new URL(input);
  let url = first;
  let method = (init.method ?? 'GET').toUpperCase();
  let body: RequestInit['body'] = init.body ?? null;
  const headers = new Headers(init.headers);
  for (let hops = 0; ; hops++) {
    const res = await bounded(base, url, { ...init, method, body, headers, redirect: 'manual' }, bounds);
    const location = res.headers.get('location');
    if (!REDIRECTS.has(res.status) || location === null) return res;
    await res.body?.cancel().catch(() => undefined);
    if (hops >= MAX_REDIRECTS) {
      throw new ModelsyncError('E_REDIRECT', `more than ${MAX_REDIRECTS} redirects from ${redactUrl(first)}`, { url: redactUrl(first) });
    }
    const next = redirectTarget(url, location);
    if (next.origin !== url.origin) headers.delete('authorization');
    if (res.status === 303 ? method !== 'HEAD' : (res.status === 301 || res.status === 302) && method === 'POST') {
      method = 'GET';
      body = null;
      headers.delete('content-type');
      headers.delete('content-length');
    }
    url = next;
  }
}

async function bounded(base: typeof fetch, url: URL, init: RequestInit, bounds: FetchBounds | undefined): Promise<Response> {
  if (bounds === undefined) return base(url, init);
  const floor = new RateFloor(bounds.rate, init.signal ?? new AbortController().signal);
  const slow = new AbortController();
  const timer = setTimeout(
    () => slow.abort(new ModelsyncError('E_TIMEOUT', `no answer from ${url.host} for ${bounds.idleTimeoutMs} ms`, { url: redactUrl(url), retryable: true })),
    bounds.idleTimeoutMs,
  );
  const signal = AbortSignal.any([floor.signal, slow.signal]);
  let res: Response;
  try {
    res = await base(url, { ...init, signal });
  } catch (e) {
    floor.stop();
    throw slow.signal.aborted ? slow.signal.reason : e;
  } finally {
    clearTimeout(timer);
  }
  if (res.body === null) {
    floor.stop();
    return res;
  }
  floor.start(url.host);
  const counted = res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, out) {
        floor.count(chunk.byteLength);
        out.enqueue(chunk);
      },
      flush() {
        floor.stop();
      },
    }),
  );
  const out = new Response(counted, { status: res.status, statusText: res.statusText, headers: res.headers });
  // @huggingface/hub names the URL in its errors.
  Object.defineProperty(out, 'url', { value: res.url });
  return out;
}
