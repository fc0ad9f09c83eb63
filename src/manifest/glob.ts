/**
 * The globs of `on_demand.allow`, matched against a request's normalised source URI (see
 * ondemand/normalise.ts: `hf://ORG/NAME@REV/PATH`, `s3://BUCKET/KEY`, an http(s) URL's origin
 * and path without its query string; a Civitai version as its download URL on civitai.com and
 * as `civitai://VERSION`).
 *
 * - A glob matches the whole URI. `*` is the only special character: it matches any run of
 *   characters, `/` included, except in the host of an http(s) glob.
 * - An http(s) glob is split at the first `/` after `://`: its host part (`host[:port]`) is matched
 *   against the URI's host alone, so a `*` there never reaches into the path
 *   (`https://*.example.com/*` does not match `https://evil.test/.example.com/x`). A glob with no
 *   `/` after its host matches nothing and is refused: write `https://host/*`.
 * - A host without `*` is normalised as a URL's is (lower case, punycode, the default port
 *   dropped); one with `*` must be lower-case ASCII. An http(s) path is compared as the URL
 *   carries it, percent-encoded: a glob path may not hold spaces or non-ASCII characters, nor `?`
 *   or `#` (the query never takes part).
 * - A loopback, private or link-local host (127.0.0.1, localhost, 10.x, 192.168.x, 169.254.x,
 *   fc00::/7, ...) is matched only by a glob that names it without `*`: a `*` in the host allows
 *   hosts on the internet, not the machine's own services.
 * - Everything else is literal and case-sensitive (`hf://StabilityAI/*` is not `hf://stabilityai/*`).
 */

const SCHEMES = ['hf://', 's3://', 'civitai://', 'https://', 'http://'] as const;

/** The glob as it will be matched (hosts normalised), or why it cannot be one. */
export function normaliseGlob(glob: string): { glob: string } | { error: string } {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what we refuse
  if (/[\x00-\x1f\x7f]/.test(glob)) return { error: 'contains a control character' };
  const scheme = SCHEMES.find((s) => glob.startsWith(s));
  if (scheme === undefined) return { error: `must start with ${SCHEMES.join(', ')}` };
  if (scheme === 'hf://' || scheme === 's3://' || scheme === 'civitai://') {
    if (glob.length === scheme.length) return { error: `names nothing after ${scheme} (write ${scheme}* to allow every one)` };
    return { glob };
  }
  const rest = glob.slice(scheme.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return { error: `names no path after its host: write ${glob}/* to allow every URL there` };
  const host = rest.slice(0, slash);
  const path = rest.slice(slash);
  if (host === '') return { error: 'has an empty host' };
  if (/[@?#\s\\/]/.test(host)) return { error: 'host part may not hold user info, "?", "#", spaces or backslashes' };
  if (/[?#]/.test(path)) return { error: 'path may not hold "?" or "#": the query string never takes part in matching' };
  if (/[^\x21-\x7e]/.test(path)) return { error: 'path may not hold spaces or non-ASCII characters: percent-encode them as the URL does' };
  if (host.includes('*')) {
    if (/[^\x21-\x7e]/.test(host) || host !== host.toLowerCase()) return { error: 'a host with "*" must be lower-case ASCII (write international names in punycode, xn--...)' };
    return { glob };
  }
  let normal: string;
  try {
    normal = new URL(`${scheme}${host}/`).host;
  } catch {
    return { error: `"${host}" is not a host name` };
  }
  return { glob: `${scheme}${normal}${path}` };
}

/** Does a normalised glob match a normalised source URI? */
export function globMatches(glob: string, uri: string): boolean {
  const scheme = SCHEMES.find((s) => glob.startsWith(s));
  if (scheme === undefined || !uri.startsWith(scheme)) return false;
  if (scheme === 'hf://' || scheme === 's3://' || scheme === 'civitai://') return wildcard(glob, uri);
  const [gHost, gPath] = splitHost(glob.slice(scheme.length));
  const [uHost, uPath] = splitHost(uri.slice(scheme.length));
  if (gPath === undefined || uPath === undefined) return false;
  if (gHost.includes('*') && isInternalHost(uHost)) return false;
  return wildcard(gHost, uHost) && wildcard(gPath, uPath);
}

function splitHost(rest: string): [string, string | undefined] {
  const slash = rest.indexOf('/');
  return slash < 0 ? [rest, undefined] : [rest.slice(0, slash), rest.slice(slash)];
}

/**
 * `*` as a run of zero or more characters, without backtracking: the URI comes from outside, and a regex
 * built from a glob with many stars can take exponential time on a long one.
 */
function wildcard(p: string, s: string): boolean {
  let pi = 0;
  let si = 0;
  let star = -1;
  let mark = 0;
  while (si < s.length) {
    if (pi < p.length && p[pi] === '*') {
      star = pi++;
      mark = si;
    } else if (pi < p.length && p[pi] === s[si]) {
      pi++;
      si++;
    } else if (star >= 0) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (p[pi] === '*') pi++;
  return pi === p.length;
}

/**
 * A host (as a URL's `host` gives it: lower case, IPv4 in dotted decimal, IPv6 in brackets, with
 * an optional port) on this machine or its private network.
 */
export function isInternalHost(host: string): boolean {
  const h = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(h);
  if (v4) return internalV4(v4.slice(1).map(Number));
  if (!h.includes(':')) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h) ?? /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(h);
  if (mapped) {
    const parts = mapped.length === 2 ? (mapped[1] ?? '').split('.').map(Number) : [parseInt(mapped[1] ?? '0', 16) >> 8, parseInt(mapped[1] ?? '0', 16) & 255, parseInt(mapped[2] ?? '0', 16) >> 8, parseInt(mapped[2] ?? '0', 16) & 255];
    return internalV4(parts);
  }
  if (h === '::' || h === '::1') return true;
  const first = parseInt(h.split(':')[0] || '0', 16);
  // fc00::/7 unique local, fe80::/10 link-local.
  return (first & 0xfe00) === 0xfc00 || (first & 0xffc0) === 0xfe80;
}

function internalV4([a = 0, b = 0]: readonly number[]): boolean {
  return a === 0 || a === 10 || a === 127 || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
}
