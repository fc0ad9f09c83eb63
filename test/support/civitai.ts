/**
 * A Civitai stand-in written from the public REST documentation (developer.civitai.com,
 * "Model versions"; the guide to downloading via the API): `GET /api/v1/model-versions/{id}`
 * answers files[] with name, sizeKB (a float of KiB), type, metadata {format, size, fp},
 * hashes.SHA256 (upper-case hex), primary and downloadUrl; `GET /api/download/models/{id}
 * [?type=&format=&size=&fp=]` redirects (307) to a signed, expiring URL on a storage host, another
 * address (127.0.0.2), whose Content-Disposition carries the file's name. A creator may require
 * login (anonymous downloads are sent to `/login?reason=download-auth`, or answered 404), a
 * version may be in early access, deleted, or not downloadable at all; the API rate-limits
 * with 429 and Retry-After. Per-version switches let a test make any answer lie.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { parseRange } from './hub-body.js';
import { paceBody } from './hub-http.js';

export interface CivitaiTestFile {
  name: string;
  content: Buffer;
  type?: string;
  format?: string;
  size?: string;
  fp?: string;
  primary?: boolean;
}

export interface CivitaiTestVersion {
  id: number;
  modelId: number;
  modelType: string;
  files: CivitaiTestFile[];
  availability?: string;
  earlyAccessEndsAt?: string;
  usageControl?: string;
  /** Anonymous downloads are refused: sent to the login page, or (`'404'`) answered 404. */
  requiresLogin?: boolean | '404';
  /** Downloads are refused to every token not in this set (early access bought by them). */
  earlyAccessTokens?: Set<string>;
  /** The API's answer is replaced by this (a hostile API). */
  rawAnswer?: unknown;
  /** The API answers 404, as for a deleted version. */
  deleted?: boolean;
}

export interface CivitaiRecord {
  host: 'site' | 'storage';
  method: string;
  url: string;
  status: number;
  authorization: string | undefined;
  range: string | undefined;
}

export interface CivitaiStandIn {
  /** http://127.0.0.1:PORT: what CIVITAI_ENDPOINT points at. */
  readonly endpoint: string;
  readonly storageOrigin: string;
  readonly requests: CivitaiRecord[];
  readonly bytesServed: Map<string, number>;
  /** Valid API tokens. */
  readonly tokens: Set<string>;
  /** Seconds a signed storage URL lives. */
  signedUrlTtlSeconds: number;
  /** The storage host honours this many GETs per file, then every URL issued so far expires. */
  expireAfter: Map<string, number>;
  /** The next API answers are 429 with this Retry-After. */
  rateLimit: { times: number; retryAfter: string } | undefined;
  /** Content-Disposition the storage host sends (a hostile name, say); default: the file's name. */
  contentDisposition: string | undefined;
  /** The API's answers trickle at this rate: a server that never stalls, and never finishes. */
  apiBytesPerSecond: number | undefined;
  /** The login page, grown to 32 KiB (a real one's size), trickles at this rate. */
  loginPageBytesPerSecond: number | undefined;
  /** Where the download endpoint redirects instead of the storage host (a hostile site). */
  storageRedirect: string | undefined;
  add(v: CivitaiTestVersion): void;
  sha256(content: Buffer): string;
  close(): Promise<void>;
}

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

export async function startCivitai(): Promise<CivitaiStandIn> {
  const versions = new Map<number, CivitaiTestVersion>();
  const secret = randomBytes(32);
  let serial = 0;
  const revokedBelow = new Map<string, number>();
  const sockets = new Set<Socket>();
  const site = createServer();
  const storage = createServer();
  for (const s of [site, storage]) {
    s.on('connection', (c: Socket) => {
      sockets.add(c);
      c.once('close', () => sockets.delete(c));
    });
  }
  const sitePort = await listen(site, '127.0.0.1');
  const storagePort = await listen(storage, '127.0.0.2');
  const c: CivitaiStandIn = {
    endpoint: `http://127.0.0.1:${sitePort}`,
    storageOrigin: `http://127.0.0.2:${storagePort}`,
    requests: [],
    bytesServed: new Map(),
    tokens: new Set(),
    signedUrlTtlSeconds: 3600,
    expireAfter: new Map(),
    rateLimit: undefined,
    contentDisposition: undefined,
    apiBytesPerSecond: undefined,
    loginPageBytesPerSecond: undefined,
    storageRedirect: undefined,
    add: (v) => void versions.set(v.id, v),
    sha256: sha,
    close: async () => {
      const closed = Promise.all([site, storage].map((s) => new Promise<void>((r) => s.close(() => r()))));
      for (const k of sockets) k.destroy();
      await closed;
    },
  };
  const record = (host: CivitaiRecord['host'], req: IncomingMessage): CivitaiRecord => {
    const r: CivitaiRecord = { host, method: req.method ?? 'GET', url: req.url ?? '/', status: 0, authorization: req.headers.authorization, range: req.headers.range };
    c.requests.push(r);
    return r;
  };
  const send = (res: ServerResponse, rec: CivitaiRecord, status: number, body: string | Buffer, headers: Record<string, string | number> = {}): void => {
    rec.status = status;
    const b = typeof body === 'string' ? Buffer.from(body) : body;
    res.writeHead(status, { 'content-length': b.length, ...headers }).end(b);
  };
  const json = (res: ServerResponse, rec: CivitaiRecord, status: number, value: unknown, headers: Record<string, string> = {}): void =>
    send(res, rec, status, JSON.stringify(value), { 'content-type': 'application/json; charset=utf-8', ...headers });

  const answer = (v: CivitaiTestVersion): unknown => ({
    id: v.id,
    modelId: v.modelId,
    name: `v${v.id}`,
    baseModel: 'SDXL 1.0',
    air: `urn:air:sdxl:${v.modelType.toLowerCase()}:civitai:${v.modelId}@${v.id}`,
    status: 'Published',
    availability: v.availability ?? 'Public',
    earlyAccessEndsAt: v.earlyAccessEndsAt ?? null,
    usageControl: v.usageControl ?? 'Download',
    model: { name: `model ${v.modelId}`, type: v.modelType, nsfw: false, poi: false },
    files: v.files.map((f, i) => ({
      id: v.id * 100 + i,
      name: f.name,
      type: f.type ?? 'Model',
      // What the site reports is KiB as a float: never the exact size.
      sizeKB: f.content.length / 1024 + 0.37,
      metadata: { format: f.format ?? 'SafeTensor', size: f.size ?? 'full', fp: f.fp ?? 'fp16' },
      pickleScanResult: 'Success',
      virusScanResult: 'Success',
      hashes: { AutoV2: sha(f.content).slice(0, 10).toUpperCase(), SHA256: sha(f.content).toUpperCase(), CRC32: 'DEADBEEF' },
      primary: f.primary ?? i === 0,
      downloadUrl: `https://civitai.com/api/download/models/${v.id}${i === 0 ? '' : `?type=${encodeURIComponent(f.type ?? 'Model')}`}`,
    })),
    images: [],
    downloadUrl: `https://civitai.com/api/download/models/${v.id}`,
  });

  const tokenOf = (req: IncomingMessage): { present: boolean; valid: boolean; token: string | undefined } => {
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    const token = m?.[1] ?? new URL(req.url ?? '/', 'http://x').searchParams.get('token') ?? undefined;
    return { present: token !== undefined, valid: token !== undefined && c.tokens.has(token), token };
  };

  const sign = (key: string, expires: number, n: number): string => createHmac('sha256', secret).update(`${key}:${expires}:${n}`).digest('hex');

  site.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const rec = record('site', req);
    const url = new URL(req.url ?? '/', c.endpoint);
    const auth = tokenOf(req);
    if (url.pathname === '/login') {
      const page = '<!DOCTYPE html><html><body>Sign in to Civitai</body></html>';
      if (c.loginPageBytesPerSecond === undefined) return send(res, rec, 200, page, { 'content-type': 'text/html; charset=utf-8' });
      paceBody(res, c.loginPageBytesPerSecond);
      return send(res, rec, 200, page.padEnd(32 * 1024, ' '), { 'content-type': 'text/html; charset=utf-8' });
    }
    if (auth.present && !auth.valid) return json(res, rec, 401, { error: 'Unauthorized' });
    const api = /^\/api\/v1\/model-versions\/(\d+)$/.exec(url.pathname);
    if (api) {
      if (c.apiBytesPerSecond !== undefined) paceBody(res, c.apiBytesPerSecond);
      if (c.rateLimit && c.rateLimit.times > 0) {
        c.rateLimit.times--;
        return json(res, rec, 429, { error: 'Too Many Requests' }, { 'retry-after': c.rateLimit.retryAfter });
      }
      const v = versions.get(Number(api[1]));
      if (!v || v.deleted) return json(res, rec, 404, { error: `No model version with id ${api[1] ?? ''}` });
      return json(res, rec, 200, v.rawAnswer ?? answer(v), { 'cache-control': 'public, s-maxage=300' });
    }
    const dl = /^\/api\/download\/models\/(\d+)$/.exec(url.pathname);
    if (!dl) return json(res, rec, 404, { error: 'Not found' });
    const v = versions.get(Number(dl[1]));
    if (!v || v.deleted) return json(res, rec, 404, { error: 'Model not found' });
    if (v.requiresLogin && !auth.valid) {
      if (v.requiresLogin === '404') return json(res, rec, 404, { error: 'Model not found' });
      return send(res, rec, 307, '', { location: `/login?returnUrl=${encodeURIComponent(`/models/${v.modelId}`)}&reason=download-auth` });
    }
    if (v.earlyAccessTokens && !(auth.token !== undefined && v.earlyAccessTokens.has(auth.token))) {
      return json(res, rec, 403, { error: 'Early Access', message: 'This asset is in Early Access. You can download it once early access ends, or purchase it now.' });
    }
    if (v.usageControl !== undefined && v.usageControl !== 'Download') return json(res, rec, 403, { error: 'Forbidden', message: 'Downloads are disabled for this resource' });
    const q = url.searchParams;
    const i = v.files.findIndex((f, n) =>
      q.has('type') || q.has('format') || q.has('size') || q.has('fp')
        ? (!q.has('type') || (f.type ?? 'Model') === q.get('type')) && (!q.has('format') || (f.format ?? 'SafeTensor') === q.get('format')) && (!q.has('size') || (f.size ?? 'full') === q.get('size')) && (!q.has('fp') || (f.fp ?? 'fp16') === q.get('fp'))
        : (f.primary ?? n === 0),
    );
    const f = v.files[i];
    if (!f) return json(res, rec, 404, { error: 'File not found' });
    const key = `${v.id}/${i}`;
    const expires = Math.floor(Date.now() / 1000) + c.signedUrlTtlSeconds;
    const n = ++serial;
    const disposition = c.contentDisposition ?? `attachment; filename="${f.name}"`;
    const signed = new URLSearchParams({ 'X-Amz-Algorithm': 'AWS4-HMAC-SHA256', 'X-Amz-Expires': String(expires), 'X-Amz-Serial': String(n), 'response-content-disposition': disposition });
    signed.set('X-Amz-Signature', sign(key, expires, n));
    return send(res, rec, 307, '', { location: c.storageRedirect ?? `${c.storageOrigin}/civitai-prod/${key}?${signed.toString()}` });
  });

  storage.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const rec = record('storage', req);
    const url = new URL(req.url ?? '/', c.storageOrigin);
    const m = /^\/civitai-prod\/(\d+)\/(\d+)$/.exec(url.pathname);
    const f = m ? versions.get(Number(m[1]))?.files[Number(m[2])] : undefined;
    if (!m || !f) return send(res, rec, 404, '<Error><Code>NoSuchKey</Code></Error>', { 'content-type': 'application/xml' });
    const key = `${m[1] ?? ''}/${m[2] ?? ''}`;
    const q = url.searchParams;
    const expires = Number(q.get('X-Amz-Expires'));
    const n = Number(q.get('X-Amz-Serial'));
    const want = Buffer.from(sign(key, expires, n));
    const got = Buffer.from(q.get('X-Amz-Signature') ?? '');
    const valid = want.length === got.length && timingSafeEqual(want, got);
    if (!valid || expires * 1000 < Date.now() || n < (revokedBelow.get(key) ?? 0)) {
      return send(res, rec, 403, '<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>', { 'content-type': 'application/xml' });
    }
    const left = c.expireAfter.get(key);
    if (left !== undefined && req.method === 'GET') {
      if (left <= 1) {
        c.expireAfter.delete(key);
        revokedBelow.set(key, serial + 1);
      } else c.expireAfter.set(key, left - 1);
    }
    const total = f.content.length;
    const r = parseRange(req.headers.range, total);
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', etag: `"${createHash('md5').update(f.content).digest('hex')}"` };
    const disposition = q.get('response-content-disposition');
    if (disposition !== null) headers['content-disposition'] = disposition;
    if (r.kind === 'unsatisfiable') return send(res, rec, 416, '', { ...headers, 'content-range': `bytes */${total}` });
    const [start, end] = r.kind === 'range' ? [r.start, r.end] : [0, total];
    if (r.kind === 'range') headers['content-range'] = `bytes ${start}-${end - 1}/${total}`;
    const body = req.method === 'HEAD' ? Buffer.alloc(0) : f.content.subarray(start, end);
    c.bytesServed.set(key, (c.bytesServed.get(key) ?? 0) + body.length);
    rec.status = r.kind === 'range' ? 206 : 200;
    res.writeHead(rec.status, { ...headers, 'content-length': end - start }).end(body);
  });
  return c;
}
