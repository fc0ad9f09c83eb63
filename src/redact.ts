/**
 * Signed CDN URLs carry credentials in their query string (Signature=, X-Amz-Credential=...):
 * only origin and path may reach a log, an error or the state DB.
 */
export function redactUrl(url: string | URL): string {
  try {
    const u = typeof url === 'string' ? new URL(url) : url;
    const q = u.search ? '?<redacted>' : '';
    const auth = u.username || u.password ? '<redacted>@' : '';
    return `${u.protocol}//${auth}${u.host}${u.pathname}${q}`;
  } catch {
    return '<unparseable url>';
  }
}

/** Replace every known secret in a string; the last line of defence for child output and errors. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join('<redacted>');
  return out;
}
