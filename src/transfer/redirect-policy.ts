import { ModelsyncError } from '../errors.js';
import { isLoopback } from '../loopback.js';
import { redactUrl } from '../redact.js';

/** Redirects followed per request before it fails (curl and undici use 20, browsers 20; ours is shorter). */
export const MAX_REDIRECTS = 10;

/**
 * Where a redirect from `from` may lead, by the same rule as a manifest's own URLs: https://
 * anywhere; plain http:// only to a loopback host or to `from`'s own origin (a hop that reaches
 * nothing new, such as the Hub's resolve-cache redirect on a plain-http local mirror), and never
 * down from https. A Location that is no URL, names another scheme, or carries credentials
 * (which we would otherwise send, or log) is refused: the server is not one to follow.
 */
export function redirectTarget(from: URL, location: string): URL {
  let next: URL;
  try {
    next = new URL(location, from);
  } catch (e) {
    throw new ModelsyncError('E_REDIRECT', `${redactUrl(from)} redirected to ${quoted(location)}, which is not a URL`, { url: redactUrl(from), cause: e });
  }
  if (next.protocol !== 'https:' && next.protocol !== 'http:') {
    throw new ModelsyncError('E_REDIRECT', `${redactUrl(from)} redirected to an unsupported scheme ${quoted(next.protocol)}`, { url: redactUrl(from) });
  }
  if (next.username !== '' || next.password !== '') {
    throw new ModelsyncError('E_REDIRECT', `${redactUrl(from)} redirected to a URL with credentials in it (${redactUrl(next)}); refused`, { url: redactUrl(from) });
  }
  if (next.protocol === 'http:') {
    if (from.protocol === 'https:') {
      throw new ModelsyncError('E_INSECURE_REDIRECT', `refused redirect from https to http: (${redactUrl(next)})`, { url: redactUrl(from) });
    }
    if (!isLoopback(next.hostname) && next.origin !== from.origin) {
      throw new ModelsyncError('E_INSECURE_REDIRECT', `refused redirect from ${from.host} to plain http:// on ${next.host} (only https://, or http:// on loopback, may be redirected to)`, {
        url: redactUrl(from),
      });
    }
  }
  return next;
}

/** A remote value in a message: JSON-escaped, cut short, and never with a query (it may be signed). */
function quoted(value: string): string {
  const q = value.indexOf('?');
  const shown = q >= 0 ? `${value.slice(0, q)}?<redacted>` : value;
  return JSON.stringify(shown.length > 100 ? `${shown.slice(0, 100)}...` : shown);
}
