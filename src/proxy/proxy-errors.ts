import { ModelsyncError } from '../errors.js';
import { isDnsFailure, isPermanentNetworkCode } from '../network-codes.js';
import type { ProxyEndpoint } from './proxy-settings.js';

/**
 * The proxy's own failures, worded once for every client (our HTTP, the Hub's fetch, the AWS
 * SDK): one line naming the proxy (never its credentials), the variable it came from, and the
 * host it was asked for.
 */

export function proxyAuthRequired(proxy: ProxyEndpoint, target: string): ModelsyncError {
  const hint = proxy.authorization === undefined ? `put credentials in ${proxy.variable} (http://user:password@host:port)` : `check the credentials in ${proxy.variable}`;
  return new ModelsyncError('E_PROXY', `proxy ${proxy.name} requires authentication (HTTP 407) for ${target}: ${hint}`, { url: proxy.name, status: 407 });
}

export function proxyRefused(proxy: ProxyEndpoint, target: string, status: number, reason = ''): ModelsyncError {
  if (status === 407) return proxyAuthRequired(proxy, target);
  // 502/503/504: the proxy could not reach the target, or is overloaded, for now.
  const retryable = status === 502 || status === 503 || status === 504;
  return new ModelsyncError('E_PROXY', `proxy ${proxy.name} refused to connect to ${target} (HTTP ${status}${reason === '' ? '' : ` ${reason}`})`, { url: proxy.name, status, retryable });
}

export function proxyUnreachable(proxy: ProxyEndpoint, target: string, e: unknown): ModelsyncError {
  const code = typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : '';
  const what = isDnsFailure(code) ? 'cannot resolve proxy' : code.includes('CERT') ? 'TLS certificate rejected for proxy' : 'cannot reach proxy';
  return new ModelsyncError('E_PROXY', `${what} ${proxy.name}${code ? ` (${code})` : ''} from ${proxy.variable}, for ${target}`, { url: proxy.name, retryable: !isPermanentNetworkCode(code), cause: e });
}
