import { NoProxy } from './no-proxy.js';
import type { ProxyEndpoint, ProxySettings } from './proxy-settings.js';

const compiled = new WeakMap<ProxySettings, NoProxy>();

/** Whether NO_PROXY sends requests to this URL direct. */
export function bypassesProxy(settings: ProxySettings, url: URL): boolean {
  let np = compiled.get(settings);
  if (np === undefined) {
    np = NoProxy.parse(settings.noProxy);
    compiled.set(settings, np);
  }
  return np.matches(url);
}

/** The proxy a request to `url` goes through, or undefined for a direct connection. */
export function proxyFor(settings: ProxySettings, url: URL): ProxyEndpoint | undefined {
  const p = url.protocol === 'https:' ? settings.https : url.protocol === 'http:' ? settings.http : undefined;
  if (p === undefined || bypassesProxy(settings, url)) return undefined;
  return p;
}
