import { ModelsyncError } from '../errors.js';
import { redactUrl } from '../redact.js';
import { MAX_REDIRECTS, redirectTarget } from './redirect-policy.js';

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * fetch with our redirect rules, for what we cannot route through httpRequest (the Hub's
 * metadata API, called by @huggingface/hub): redirects followed by hand (fetch would follow a
 * loopback mirror's redirect to plain http anywhere), each one checked by redirectTarget, the
 * Authorization header dropped once the origin changes, at most MAX_REDIRECTS of them.
 * Method and body change as fetch itself would change them (RFC 9110 15.4).
 */
export async function fetchFollowing(input: string | URL | Request, init: RequestInit = {}, base: typeof fetch = fetch): Promise<Response> {
  if (input instanceof Request) throw new Error('fetchFollowing takes a URL, not a Request');
  const first = new URL(input);
  let url = first;
  let method = (init.method ?? 'GET').toUpperCase();
  let body: RequestInit['body'] = init.body ?? null;
  const headers = new Headers(init.headers);
  for (let hops = 0; ; hops++) {
    const res = await base(url, { ...init, method, body, headers, redirect: 'manual' });
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
