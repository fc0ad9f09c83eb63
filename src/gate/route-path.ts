/**
 * The path a request names, as ComfyUI's router (aiohttp over yarl) will understand it:
 * percent-decoded and with dot segments resolved, so that `/%70rompt` or `/x/../prompt` cannot
 * reach ComfyUI's POST /prompt past the gate's own handling of it. Repeated slashes are
 * collapsed too; a path the gate takes as one of its own is relayed in this form, so both
 * sides agree on what was asked.
 */
export function routePath(rawUrl: string | undefined): string {
  const raw = (rawUrl ?? '/').split(/[?#]/)[0] ?? '/';
  let decoded: string;
  try {
    // %2F stays encoded: it is a character of a segment, not a separator, for aiohttp too.
    decoded = decodeURIComponent(raw.replace(/%2f/gi, '%252F'));
  } catch {
    decoded = raw;
  }
  const out: string[] = [];
  for (const seg of decoded.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  return `/${out.join('/')}${decoded.endsWith('/') && out.length > 0 ? '/' : ''}`;
}

/** The query string of a request target, with its "?", or "". */
export function queryOf(rawUrl: string | undefined): string {
  const q = (rawUrl ?? '').indexOf('?');
  return q < 0 ? '' : (rawUrl ?? '').slice(q);
}
