/** A Hub file named by its web URL: what an `hf://` source says, before it is one. */
export interface HubFile {
  readonly repoType: 'model' | 'dataset';
  /** "ORG/NAME", decoded. */
  readonly repo: string;
  /** Decoded ("refs/pr/1"). */
  readonly revision: string;
  /** Path in the repo, decoded, "/"-separated. */
  readonly path: string;
}

const HUB_HOSTS: ReadonlySet<string> = new Set(['huggingface.co', 'hf.co']);

/**
 * `https://huggingface.co/[datasets/]ORG/NAME/resolve/REV/PATH` (also on hf.co, and under the
 * `endpoint` a mirror serves the Hub API at, HF_ENDPOINT) as the file it names. Undefined when the
 * URL is not on the Hub at all; an error when it is but names no file in a way we can read
 * without guessing: credentials in it, a path that is no resolve URL, percent-encoding that is
 * broken or hides a "/" inside a name (the Hub and we would disagree on where the name ends).
 * The query (`?download=true`) is ignored.
 */
export function parseHubUrl(url: string, endpoint?: string): HubFile | { error: string } | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const prefix = hubPrefix(u, endpoint);
  if (prefix === undefined) return undefined;
  if (u.username !== '' || u.password !== '') return { error: 'credentials in the URL are not allowed (HF_TOKEN is sent to the Hub)' };
  const m = /^\/(datasets\/)?([^/]+)\/([^/]+)\/(?:resolve|blob)\/([^/]+)\/(.+)$/.exec(u.pathname.slice(prefix.length));
  if (!m) return { error: 'a Hub URL that names no file: expected /ORG/NAME/resolve/REVISION/PATH' };
  const parts = [m[2], m[3], m[4], ...(m[5] ?? '').split('/')].map((s) => decode(s ?? ''));
  if (parts.some((p) => p === undefined)) return { error: 'a Hub URL with broken percent-encoding' };
  const [org = '', name = '', revision = '', ...segs] = parts as string[];
  if ([org, name, ...segs].some((s) => s.includes('/') || s.includes('\\'))) return { error: 'a Hub URL with an encoded "/" or "\\" inside a name' };
  return { repoType: m[1] ? 'dataset' : 'model', repo: `${org}/${name}`, revision, path: segs.join('/') };
}

/** As an hf:// URI; `explicit`: always with its @REVISION (else `main` is left out). */
export function hubFileUri(f: HubFile, explicit: boolean): string {
  const rev = explicit || f.revision !== 'main' ? `@${encodeURIComponent(f.revision)}` : '';
  return `hf://${f.repoType === 'dataset' ? 'datasets/' : ''}${f.repo}${rev}/${f.path}`;
}

/** The path prefix the Hub's files are under at this URL's origin, if it is the Hub's. */
function hubPrefix(u: URL, endpoint: string | undefined): string | undefined {
  if (u.protocol === 'https:' && u.port === '' && HUB_HOSTS.has(u.hostname)) return '';
  if (endpoint === undefined) return undefined;
  let e: URL;
  try {
    e = new URL(endpoint);
  } catch {
    return undefined;
  }
  if (e.origin !== u.origin) return undefined;
  const base = e.pathname.replace(/\/+$/, '');
  return u.pathname.startsWith(`${base}/`) ? base : undefined;
}

function decode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}
