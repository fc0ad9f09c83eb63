import { ModelsyncError } from '../errors.js';

/** One proxy from HTTPS_PROXY or HTTP_PROXY. */
export interface ProxyEndpoint {
  readonly protocol: 'http:' | 'https:';
  /** Without brackets for IPv6. */
  readonly host: string;
  readonly port: number;
  /** `http://host:port`, never with credentials: what every message and log names. */
  readonly name: string;
  /** `Basic ...` from the URL's user and password; sent to the proxy only, as Proxy-Authorization. */
  readonly authorization: string | undefined;
  /** The variable it was read from, for messages. */
  readonly variable: string;
}

export interface ProxySettings {
  /** For https:// targets (a CONNECT tunnel). */
  readonly https: ProxyEndpoint | undefined;
  /** For http:// targets (absolute-form requests). */
  readonly http: ProxyEndpoint | undefined;
  /**
   * NO_PROXY as written: compiled on first use (proxy-for.ts), because the matcher needs
   * node:net, which a warm start never loads otherwise.
   */
  readonly noProxy: string;
}

export interface ReadProxies {
  readonly settings: ProxySettings;
  /** Passwords and Authorization values: scrubbed from child output, never logged. */
  readonly secrets: readonly string[];
  /** Proxy variables that carry credentials: kept from children unless passed through. */
  readonly secretVars: readonly string[];
}

/**
 * HTTPS_PROXY, HTTP_PROXY and NO_PROXY, in either case; where both are set the lower-case one
 * wins, as in curl (and an empty lower-case one turns the proxy off). A value without a scheme
 * is an http:// proxy; a port left out is the scheme's (80, 443), as undici, Go and Python take
 * it. SOCKS is not supported: refused, rather than silently going direct.
 */
export function readProxySettings(env: NodeJS.ProcessEnv): ReadProxies {
  const secrets: string[] = [];
  const secretVars: string[] = [];
  const endpoint = (lower: string, upper: string): ProxyEndpoint | undefined => {
    const v = pick(env, lower, upper);
    if (v === undefined) return undefined;
    const p = parseProxyUrl(v.name, v.value);
    if (p?.authorization !== undefined) {
      secrets.push(p.authorization, p.authorization.slice('Basic '.length), ...p.credentials);
      for (const n of [lower, upper]) if (env[n] !== undefined) secretVars.push(n);
    }
    return p?.endpoint;
  };
  const https = endpoint('https_proxy', 'HTTPS_PROXY');
  const http = endpoint('http_proxy', 'HTTP_PROXY');
  const noProxy = pick(env, 'no_proxy', 'NO_PROXY')?.value ?? '';
  return { settings: Object.freeze({ https, http, noProxy }), secrets: [...new Set(secrets)].filter((s) => s.length >= 4), secretVars };
}

function pick(env: NodeJS.ProcessEnv, lower: string, upper: string): { name: string; value: string } | undefined {
  const name = env[lower] !== undefined ? lower : env[upper] !== undefined ? upper : undefined;
  return name === undefined ? undefined : { name, value: env[name] ?? '' };
}

function parseProxyUrl(variable: string, raw: string): { endpoint: ProxyEndpoint; authorization: string | undefined; credentials: string[] } | undefined {
  const value = raw.trim();
  if (value === '') return undefined;
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new ModelsyncError('E_USAGE', `${variable} is not a proxy URL (expected http://[user:password@]host:port)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new ModelsyncError('E_USAGE', `${variable}: ${u.protocol}// proxies are not supported (use an http:// or https:// proxy)`);
  }
  if (u.hostname === '') throw new ModelsyncError('E_USAGE', `${variable} names no proxy host`);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  let user: string;
  let password: string;
  try {
    user = decodeURIComponent(u.username);
    password = decodeURIComponent(u.password);
  } catch {
    throw new ModelsyncError('E_USAGE', `${variable}: the proxy credentials are not valid percent-encoding`);
  }
  const hasAuth = u.username !== '' || u.password !== '';
  const authorization = hasAuth ? `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` : undefined;
  const name = `${u.protocol}//${u.host}`;
  const endpoint: ProxyEndpoint = Object.freeze({ protocol: u.protocol, host, port, name, authorization, variable });
  return { endpoint, authorization, credentials: [password, u.password].filter((s) => s !== '') };
}
