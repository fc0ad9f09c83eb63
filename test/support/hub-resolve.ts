import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { OutgoingHttpHeaders } from 'node:http';
import { checkAccess, type AccessPolicy } from './hub-access.js';
import { serveBlob, type BodyEnv } from './hub-body.js';
import { contentDisposition, contentTypeFor, head, methodNotAllowed, notFoundPage, sendError, type Exchange } from './hub-http.js';
import type { RepoStore, StoredFile, StoredRepo } from './hub-store.js';
import type { RepoType } from './hub-types.js';
import { resolveXet, type XetEnv } from './hub-xet.js';

export interface ResolveEnv {
  store: RepoStore;
  body: BodyEnv;
  signer: UrlSigner;
  xet: XetEnv;
  /** Read on every request: tests change these on the live Hub. */
  settings: AccessPolicy & { cdnOrigin: string; plainRedirect: boolean; signedUrlTtlSeconds: number };
}

/** CloudFront-style signed URLs: the CDN refuses a URL whose query was lost or tampered with. */
export class UrlSigner {
  private readonly secret = randomBytes(32);

  query(sha256: string, ttlSeconds: number, path: string): string {
    const expires = String(Math.floor(Date.now() / 1000) + ttlSeconds);
    return new URLSearchParams({
      'response-content-disposition': contentDisposition(path),
      Expires: expires,
      Signature: this.mac(sha256, expires),
      'Key-Pair-Id': 'K3RPWS32NSSJCE',
    }).toString();
  }

  check(sha256: string, q: URLSearchParams): string | undefined {
    const expires = q.get('Expires');
    const sig = q.get('Signature');
    if (expires === null || sig === null || q.get('Key-Pair-Id') === null) return 'Missing Key-Pair-Id query parameter or cookie value';
    const want = Buffer.from(this.mac(sha256, expires));
    const got = Buffer.from(sig);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return 'Access denied';
    if (Number(expires) * 1000 < Date.now()) return 'Request has expired';
    return undefined;
  }

  private mac(sha256: string, expires: string): string {
    return createHmac('sha256', this.secret).update(`${sha256}:${expires}`).digest('base64url');
  }
}

function plainHeaders(file: StoredFile, commit: string): Record<string, string> {
  return {
    etag: `"${file.blobId}"`,
    'x-repo-commit': commit,
    'content-type': contentTypeFor(file.path),
    'content-disposition': contentDisposition(file.path),
  };
}

function lookupRepo(ex: Exchange, env: ResolveEnv, type: RepoType, id: string): StoredRepo | undefined {
  const repo = env.store.get(type, id);
  const denied = checkAccess(env.settings, ex.req, type, id, repo, 'file');
  if (denied || !repo) {
    sendError(ex, denied ?? { status: 404, code: 'RepoNotFound', message: 'Repository not found' });
    return undefined;
  }
  return repo;
}

/** `/{org}/{name}/resolve/{rev}/{path}` and `/datasets/...`; `segs` are the decoded path segments. */
export function handleResolve(ex: Exchange, env: ResolveEnv, segs: string[]): void {
  const isDataset = segs[0] === 'datasets' && segs[3] === 'resolve';
  if (!isDataset && segs[2] !== 'resolve') return notFoundPage(ex);
  const [org = '', name = '', , ...rest] = isDataset ? segs.slice(1) : segs;
  if (ex.req.method !== 'GET' && ex.req.method !== 'HEAD') return methodNotAllowed(ex, 'GET, HEAD');
  const type: RepoType = isDataset ? 'dataset' : 'model';
  const id = `${org}/${name}`;
  const repo = lookupRepo(ex, env, type, id);
  if (!repo) return;
  const { rev, rest: pathSegs } = env.store.splitRevision(repo, rest);
  const commit = env.store.commitFor(repo, rev);
  if (!commit) return sendError(ex, { status: 404, code: 'RevisionNotFound', message: `Invalid rev id: ${rev}` });
  const path = pathSegs.join('/');
  const file = commit.files.get(path);
  if (!file) {
    return sendError(ex, { status: 404, code: 'EntryNotFound', message: 'Entry not found', headers: { 'x-repo-commit': commit.sha } });
  }

  if (file.lfs && file.xetHash !== undefined) return resolveXet(ex, env.xet, { ...file, xetHash: file.xetHash }, { type, id }, commit.sha);
  if (file.lfs) {
    const lies = env.body.faults.get(file.sha256) ?? env.body.faults.get(path);
    const location = lies?.resolveRedirect ?? `${env.settings.cdnOrigin}/blobs/${file.sha256}?${env.signer.query(file.sha256, env.settings.signedUrlTtlSeconds, path)}`;
    const body = Buffer.from(`Found. Redirecting to ${location}`);
    const headers: OutgoingHttpHeaders = {
      location,
      'x-linked-etag': `"${file.sha256}"`,
      'x-linked-size': file.content.length,
      'x-repo-commit': commit.sha,
      'accept-ranges': 'bytes',
      'content-type': 'text/plain; charset=utf-8',
      'content-length': body.length,
    };
    for (const [k, v] of Object.entries(lies?.resolveHeaders ?? {})) {
      if (v === '') delete headers[k.toLowerCase()];
      else headers[k.toLowerCase()] = v;
    }
    head(ex, 302, headers);
    ex.res.end(body);
    return;
  }

  const anonymous = ex.req.headers.authorization === undefined;
  if (env.settings.plainRedirect && anonymous && !repo.private && !repo.gated) {
    const prefix = isDataset ? 'datasets' : 'models';
    const encodedPath = path.split('/').map(encodeURIComponent).join('/');
    const origin = `/${isDataset ? 'datasets/' : ''}${id}/resolve/${rev}/${path}`;
    const query = `${encodeURIComponent(origin)}=&etag=${encodeURIComponent(`"${file.blobId}"`)}`;
    const location = `/api/resolve-cache/${prefix}/${id}/${commit.sha}/${encodedPath}?${query}`;
    const body = Buffer.from(`Temporary Redirect. Redirecting to ${location}`);
    head(ex, 307, { location, 'x-repo-commit': commit.sha, 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length });
    ex.res.end(body);
    return;
  }
  serveBlob(ex, { key: path, content: file.content, headers: plainHeaders(file, commit.sha), host: 'hub' }, env.body);
}

/** `/api/resolve-cache/{models|datasets}/{org}/{name}/{commit}/{path}`; `segs` follow "resolve-cache". */
export function handleResolveCache(ex: Exchange, env: ResolveEnv, segs: string[]): void {
  const [kind, org = '', name = '', sha = '', ...pathSegs] = segs;
  if ((kind !== 'models' && kind !== 'datasets') || pathSegs.length === 0) return notFoundPage(ex);
  if (ex.req.method !== 'GET' && ex.req.method !== 'HEAD') return methodNotAllowed(ex, 'GET, HEAD');
  const type: RepoType = kind === 'models' ? 'model' : 'dataset';
  const repo = lookupRepo(ex, env, type, `${org}/${name}`);
  if (!repo) return;
  const commit = repo.commits.get(sha);
  if (!commit) return sendError(ex, { status: 404, code: 'RevisionNotFound', message: `Invalid rev id: ${sha}` });
  const path = pathSegs.join('/');
  const file = commit.files.get(path);
  if (!file || file.lfs) {
    return sendError(ex, { status: 404, code: 'EntryNotFound', message: 'Entry not found', headers: { 'x-repo-commit': commit.sha } });
  }
  serveBlob(ex, { key: path, content: file.content, headers: plainHeaders(file, commit.sha), host: 'hub' }, env.body);
}

/** CDN `/blobs/{sha256}?<signed query>`. */
export function handleCdn(ex: Exchange, env: ResolveEnv): void {
  const m = /^\/blobs\/([0-9a-f]{64})$/.exec(ex.url.pathname);
  const content = m?.[1] === undefined ? undefined : env.store.blob(m[1]);
  if (!m?.[1] || !content) {
    const body = Buffer.from('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code></Error>');
    head(ex, 404, { 'content-type': 'application/xml', 'content-length': body.length });
    ex.res.end(body);
    return;
  }
  if (ex.req.method !== 'GET' && ex.req.method !== 'HEAD') return methodNotAllowed(ex, 'GET, HEAD');
  const sha = m[1];
  const problem = env.signer.check(sha, ex.url.searchParams);
  if (problem !== undefined) {
    const body = Buffer.from(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>${problem}</Message></Error>`);
    head(ex, 403, { 'content-type': 'application/xml', 'content-length': body.length });
    ex.res.end(body);
    return;
  }
  const headers: Record<string, string> = { etag: `"${sha}"`, 'content-type': 'application/octet-stream', 'x-cache': 'Miss from cloudfront' };
  const disposition = ex.url.searchParams.get('response-content-disposition');
  if (disposition !== null) headers['content-disposition'] = disposition;
  serveBlob(ex, { key: sha, content, headers, host: 'cdn' }, env.body);
}
