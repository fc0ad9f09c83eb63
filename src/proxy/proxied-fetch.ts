import type { Dispatcher } from 'undici';
import { proxyRefused, proxyUnreachable } from './proxy-errors.js';
import { proxyFor } from './proxy-for.js';
import type { ProxyEndpoint, ProxySettings } from './proxy-settings.js';

/** Failures of the connection to the proxy itself (every connection goes there when one is used). */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * A fetch (for @huggingface/hub) that goes through the proxy HTTPS_PROXY / HTTP_PROXY name for
 * each URL, NO_PROXY applied by the same matcher as our own client: undici's fetch with a
 * ProxyAgent (CONNECT for https, absolute form for http, as ours). Without any proxy it is the
 * global fetch, and undici is never loaded.
 */
export function proxiedFetch(settings: ProxySettings): typeof fetch {
  if (settings.https === undefined && settings.http === undefined) return fetch;
  const agents = new Map<string, Dispatcher>();
  return async (input, init) => {
    const href = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const url = new URL(href);
    const proxy = proxyFor(settings, url);
    if (proxy === undefined) return fetch(input, init);
    const undici = await import('undici');
    let agent = agents.get(proxy.name);
    if (agent === undefined) {
      agent = new undici.ProxyAgent({ uri: proxy.name, proxyTunnel: false, ...(proxy.authorization === undefined ? {} : { token: proxy.authorization }) });
      agents.set(proxy.name, agent);
    }
    let res: Response;
    try {
      // undici's own Response and RequestInit: the same shapes as the global ones, other classes.
      const request = (input instanceof Request ? { method: input.method, headers: input.headers, body: input.body, ...init } : init) as unknown as Parameters<typeof undici.fetch>[1];
      // undici asks getMaxListeners() of the signal, which Node 20 refuses for a signal given
      // setMaxListeners(0) (ours, for the many listeners of a sync): it gets a follower instead.
      const signal = init?.signal ? AbortSignal.any([init.signal]) : undefined;
      res = (await undici.fetch(url, { ...request, ...(signal ? { signal } : {}), dispatcher: agent })) as unknown as Response;
    } catch (e) {
      throw proxyFailure(e, proxy, url) ?? e;
    }
    // An absolute-form request's 407 is the proxy's answer, not the server's.
    if (res.status === 407) {
      await res.body?.cancel();
      throw proxyRefused(proxy, url.host, 407);
    }
    return res;
  };
}

function proxyFailure(e: unknown, proxy: ProxyEndpoint, url: URL): Error | undefined {
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    // undici's words: "Proxy response (407) !== 200 when HTTP Tunneling" (CONNECT), "Proxy Authentication Required (407)" (absolute form).
    const status = /Proxy response \((\d{3})\)|Proxy Authentication Required \((407)\)/.exec(c.message)?.slice(1).find((x) => x !== undefined);
    if (status !== undefined) return proxyRefused(proxy, url.host, Number(status));
    const code = 'code' in c && typeof c.code === 'string' ? c.code : '';
    if (UNREACHABLE.has(code) || c.name === 'SecureProxyConnectionError') return proxyUnreachable(proxy, url.host, c);
  }
  return undefined;
}
