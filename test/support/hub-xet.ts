/**
 * The Xet-era Hub (hub-protocol.md, "Files stored in Xet"): a repo flagged `xet` answers
 * `resolve` for its large files with a 302 that carries X-Xet-Hash and a `Link` with
 * rel="xet-auth" next to the usual X-Linked-Etag / X-Linked-Size / X-Repo-Commit, and points at a
 * bridge host (cas-bridge.xethub.hf.co in real life, 127.0.0.3 here) with an S3-style presigned
 * URL that expires. The bridge serves ranges, but its ETag is the Xet hash, not the sha256: a
 * client that took it for the content's hash would be wrong.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { OutgoingHttpHeaders } from 'node:http';
import { serveBlob, type BodyEnv } from './hub-body.js';
import { contentDisposition, head, methodNotAllowed, sendJson, type Exchange } from './hub-http.js';
import type { StoredFile } from './hub-store.js';

/** The Xet hash of a file: a Merkle hash in real life; any 64-hex value that is not the sha256 will do. */
export function xetHashOf(content: Buffer): string {
  return createHash('sha256').update('xet-merkle\0').update(content).digest('hex');
}

export interface XetEnv {
  body: BodyEnv;
  signer: XetSigner;
  /** Read on every request: tests change these on the live Hub. */
  settings: { endpoint: string; bridgeOrigin: string; signedUrlTtlSeconds: number };
  /** Xet hash -> content, for every Xet-stored file of every repo. */
  blob(xetHash: string): { content: Buffer; sha256: string; path: string } | undefined;
}

/**
 * AWS SigV4-shaped presigned queries (X-Amz-Date + X-Amz-Expires, X-Amz-Signature). Each URL
 * also carries a serial, signed with the rest, so that a test can expire every URL issued so far
 * in the middle of a download (`xetExpireAfter`), deterministically.
 */
export class XetSigner {
  private readonly secret = randomBytes(32);
  private serial = 0;
  /** Xet hash -> URLs with a serial below this one are expired. */
  private readonly revokedBelow = new Map<string, number>();

  query(xetHash: string, ttlSeconds: number, path: string): string {
    const date = new Date().toISOString().replace(/[-:]|\.\d{3}/g, '');
    const serial = String(++this.serial);
    const expires = String(ttlSeconds);
    const q = new URLSearchParams({
      'X-Amz-Algorithm': 'AWS4-HMAC-SHA256',
      'X-Amz-Content-Sha256': 'UNSIGNED-PAYLOAD',
      'X-Amz-Credential': `cas/${date.slice(0, 8)}/us-east-1/s3/aws4_request`,
      'X-Amz-Date': date,
      'X-Amz-Expires': expires,
      'X-Amz-SignedHeaders': 'host',
      'X-Xet-Cas-Uid': 'public',
      'X-Xet-Serial': serial,
      'response-content-disposition': contentDisposition(path),
      'x-id': 'GetObject',
    });
    q.set('X-Amz-Signature', this.mac(xetHash, date, expires, serial));
    return q.toString();
  }

  /** Every URL for this file issued until now is expired from here on. */
  expireIssued(xetHash: string): void {
    this.revokedBelow.set(xetHash, this.serial + 1);
  }

  check(xetHash: string, q: URLSearchParams): string | undefined {
    const date = q.get('X-Amz-Date');
    const expires = q.get('X-Amz-Expires');
    const serial = q.get('X-Xet-Serial');
    const sig = q.get('X-Amz-Signature');
    if (date === null || expires === null || serial === null || sig === null) return 'Query-string authentication requires the X-Amz-Signature parameter';
    const want = Buffer.from(this.mac(xetHash, date, expires, serial));
    const got = Buffer.from(sig);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return 'The request signature we calculated does not match the signature you provided';
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date);
    const issued = m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])) : NaN;
    if (!(issued + Number(expires) * 1000 >= Date.now())) return 'Request has expired';
    if (Number(serial) < (this.revokedBelow.get(xetHash) ?? 0)) return 'Request has expired';
    return undefined;
  }

  private mac(xetHash: string, date: string, expires: string, serial: string): string {
    return createHmac('sha256', this.secret).update(`${xetHash}:${date}:${expires}:${serial}`).digest('hex');
  }
}

/** True when the caller asked for the JSON file description instead of the redirect. */
export function wantsXetFileInfo(ex: Exchange): boolean {
  return (ex.req.headers.accept ?? '').includes('application/vnd.xet-fileinfo+json');
}

/** The resolve answer for a Xet-stored file: a 302 to the bridge, or the JSON file description. */
export function resolveXet(ex: Exchange, env: XetEnv, file: StoredFile & { xetHash: string }, repo: { type: string; id: string }, commit: string): void {
  const apiKind = repo.type === 'dataset' ? 'datasets' : 'models';
  const refresh = `${env.settings.endpoint}/api/${apiKind}/${repo.id}/xet-read-token/${commit}`;
  const reconstruction = `${env.settings.bridgeOrigin}/v1/reconstructions/${file.xetHash}`;
  const location = `${env.settings.bridgeOrigin}/xet-bridge-us/${file.xetHash}?${env.signer.query(file.xetHash, env.settings.signedUrlTtlSeconds, file.path)}`;
  const common: OutgoingHttpHeaders = {
    'x-linked-etag': `"${file.sha256}"`,
    'x-linked-size': file.content.length,
    'x-repo-commit': commit,
    'x-xet-hash': file.xetHash,
    link: `<${refresh}>; rel="xet-auth", <${reconstruction}>; rel="xet-reconstruction-info"`,
    'accept-ranges': 'bytes',
  };
  if (wantsXetFileInfo(ex)) {
    // What @huggingface/hub asks for when it speaks Xet itself: no redirect, no bytes.
    sendJson(ex, 200, { casUrl: env.settings.bridgeOrigin, hash: file.xetHash, refreshUrl: refresh, reconstructionUrl: reconstruction, etag: file.sha256, size: file.content.length }, common);
    return;
  }
  const body = Buffer.from(`Found. Redirecting to ${location}`);
  head(ex, 302, { ...common, location, 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length });
  ex.res.end(body);
}

/** `GET /api/{models|datasets}/{org}/{name}/xet-read-token/{rev}`: what the xet-auth link names. */
export function xetReadToken(ex: Exchange, env: XetEnv): void {
  const exp = Math.floor(Date.now() / 1000) + env.settings.signedUrlTtlSeconds;
  sendJson(ex, 200, { accessToken: `xet_${randomBytes(16).toString('hex')}`, exp, casUrl: env.settings.bridgeOrigin }, { 'x-xet-access-token': 'xet', 'x-xet-token-expiration': String(exp), 'x-xet-cas-url': env.settings.bridgeOrigin });
}

/** Bridge `GET /xet-bridge-us/{xetHash}?<presigned query>`: ranges, S3-style XML errors, ETag = the Xet hash. */
export function handleBridge(ex: Exchange, env: XetEnv): void {
  const m = /^\/xet-bridge-us\/([0-9a-f]{64})$/.exec(ex.url.pathname);
  const xetHash = m?.[1];
  const found = xetHash === undefined ? undefined : env.blob(xetHash);
  if (xetHash === undefined || found === undefined) return xmlError(ex, 404, 'NoSuchKey', 'The specified key does not exist.');
  if (ex.req.method !== 'GET' && ex.req.method !== 'HEAD') return methodNotAllowed(ex, 'GET, HEAD');
  const problem = env.signer.check(xetHash, ex.url.searchParams);
  if (problem !== undefined) return xmlError(ex, 403, 'AccessDenied', problem);
  const f = env.body.faults.get(found.sha256);
  const expire = f?.xetExpireAfter;
  if (expire !== undefined && ex.req.method === 'GET') {
    // The bridge honours this GET; every URL issued until now is refused after it.
    if (--expire.requests <= 0) {
      delete f?.xetExpireAfter;
      env.signer.expireIssued(xetHash);
    }
  }
  const headers: OutgoingHttpHeaders = {
    etag: `"${xetHash}"`,
    'content-type': 'application/octet-stream',
    'x-amz-cf-pop': 'LOOPBACK-P1',
    'x-cache': 'Miss from cloudfront',
    ...(f?.xetLyingBridge ? { 'x-linked-etag': `"${createHash('sha256').update('not the file').digest('hex')}"`, 'x-linked-size': String(found.content.length + 1) } : {}),
  };
  const disposition = ex.url.searchParams.get('response-content-disposition');
  if (disposition !== null) headers['content-disposition'] = disposition;
  serveBlob(ex, { key: found.sha256, content: found.content, headers, host: 'cdn' }, env.body);
}

function xmlError(ex: Exchange, status: number, code: string, message: string): void {
  const body = Buffer.from(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message></Error>`);
  head(ex, status, { 'content-type': 'application/xml', 'content-length': body.length });
  ex.res.end(body);
}
