/**
 * A real S3-protocol server for tests: s3rver in-process on 127.0.0.1, behind a small HTTP
 * proxy that adds what s3rver lacks and what tests need: If-Match on GET (s3rver ignores it;
 * the proxy answers 412 when the ETag it would send differs), a hook before the n-th GET of a
 * key (to replace an object between ranges), extra HEAD headers (a full-object checksum),
 * canned errors per bucket (AccessDenied, a wrong region), and a log of every request.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request as httpRequest, createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { afterAll, afterEach } from 'vitest';

export interface S3Seen {
  readonly method: string;
  readonly bucket: string;
  readonly key: string;
  readonly range: string | undefined;
  readonly ifMatch: string | undefined;
  /** The query: which call a request is (`uploads`, `uploadId`, `partNumber`, the SDK's `x-id`). */
  readonly query: URLSearchParams;
  /** Every request header, joined: scanned for secrets. */
  readonly headerText: string;
  status: number;
}

export interface CannedError {
  readonly status: number;
  readonly code: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** A lie in the body of a GET S3 answered: its headers and bytes as they came, then changed. */
export interface S3BodyFault {
  /** A 206's Content-Range moved by this many bytes: it names other bytes than those sent. */
  readonly shiftContentRange?: number;
  /** After the object's bytes, garbage that never ends (no Content-Length). */
  readonly endless?: boolean;
  /** The body sent at this many bytes per second. */
  readonly bytesPerSecond?: number;
}

export interface S3Fixture {
  /** The proxy: what modelsync talks to. */
  readonly endpoint: string;
  readonly requests: S3Seen[];
  enforceIfMatch: boolean;
  /** Awaited before the n-th (1-based) GET of `key` is forwarded. */
  beforeGet: ((key: string, n: number) => Promise<void>) | undefined;
  readonly headHeaders: Map<string, Record<string, string>>;
  readonly failBucket: Map<string, CannedError>;
  /** A canned error for chosen requests (a method, a key), or undefined to serve them; awaited, so it can hold a request too. */
  fail: ((q: S3Seen) => CannedError | undefined | Promise<CannedError | undefined>) | undefined;
  /** A lie for chosen successful GETs, or undefined to serve them as S3 answered. */
  bodyFault: ((q: S3Seen) => S3BodyFault | undefined) | undefined;
  /** Store an object directly in s3rver; with `partSize`, as a multipart upload. Returns its ETag. */
  put(bucket: string, key: string, body: Buffer, opts?: { partSize?: number }): Promise<string>;
  gets(key: string): S3Seen[];
  close(): Promise<void>;
}

/**
 * A test file's S3 stand-in, set up the one way (as useHubSandbox() does the Hub):
 *
 *   const s3 = await useS3([BUCKET]);
 *
 * It starts once for the file (at the top-level await) with these buckets; after each test its
 * request log is emptied and every fault and hook a test set is cleared (objects stay); after
 * the file it closes. A file's own afterEach (killing children, say) runs before this one's.
 */
export async function useS3(buckets: readonly string[]): Promise<S3Fixture> {
  const s3 = await startS3(buckets);
  afterAll(async () => {
    await s3.close();
  });
  afterEach(() => {
    s3.requests.length = 0;
    s3.enforceIfMatch = true;
    s3.beforeGet = undefined;
    s3.headHeaders.clear();
    s3.failBucket.clear();
    s3.fail = undefined;
    s3.bodyFault = undefined;
  });
  return s3;
}

/**
 * The environment a CLI or daemon run needs to use `s3` as its S3, spread into a sandbox's
 * env: s3rver's own access key id beside the sandbox's recognisable secret (s3rver does not
 * verify SigV4 signatures), and nothing of the machine's AWS setup (config and credentials
 * files named in `dir`, which do not exist), nor the 1-second IMDS probe.
 */
export function s3Env(s3: Pick<S3Fixture, 'endpoint'>, dir: string): Record<string, string> {
  return {
    AWS_ENDPOINT_URL_S3: s3.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: path.join(dir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'no-aws-credentials'),
  };
}

export async function startS3(buckets: readonly string[]): Promise<S3Fixture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-s3rver-'));
  const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: dir, configureBuckets: buckets.map((name) => ({ name })) });
  const { port: s3port } = await s3rver.run();
  const direct = new S3Client({
    endpoint: `http://127.0.0.1:${s3port}`,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    // s3rver predates flexible checksums.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const getCounts = new Map<string, number>();
  // Our own agent, destroyed on close: s3rver.close() would otherwise wait on idle keep-alives.
  const agent = new Agent({ keepAlive: true });
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => void handle(req, res).catch(() => res.destroy()));
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const fx: S3Fixture = {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: [],
    enforceIfMatch: true,
    beforeGet: undefined,
    headHeaders: new Map(),
    failBucket: new Map(),
    fail: undefined,
    bodyFault: undefined,
    put: (bucket, key, body, opts = {}) => putObject(direct, bucket, key, body, opts.partSize),
    gets: (key) => fx.requests.filter((r) => r.method === 'GET' && r.key === key),
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
      direct.destroy();
      agent.destroy();
      await s3rver.close();
      await rm(dir, { recursive: true, force: true });
    },
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://proxy.invalid');
    const [, bucket = '', ...rest] = url.pathname.split('/').map((s) => decodeURIComponent(s));
    const key = rest.join('/');
    const method = req.method ?? 'GET';
    const header = (n: string): string | undefined => (typeof req.headers[n] === 'string' ? (req.headers[n] as string) : undefined);
    const seen: S3Seen = { method, bucket, key, range: header('range'), ifMatch: header('if-match'), query: url.searchParams, headerText: JSON.stringify(req.headers), status: 0 };
    fx.requests.push(seen);
    const canned = fx.failBucket.get(bucket) ?? (await fx.fail?.(seen));
    if (canned) {
      seen.status = canned.status;
      sendError(res, method, canned);
      return;
    }
    if (method === 'GET' && key !== '') {
      const n = (getCounts.get(key) ?? 0) + 1;
      getCounts.set(key, n);
      await fx.beforeGet?.(key, n);
    }
    const up = httpRequest({ host: '127.0.0.1', port: s3port, method, path: req.url, headers: req.headers, agent }, (upRes) => {
      const etag = upRes.headers.etag;
      const ok = (upRes.statusCode ?? 500) < 300;
      if (fx.enforceIfMatch && method === 'GET' && ok && seen.ifMatch !== undefined && etag !== seen.ifMatch) {
        upRes.destroy();
        seen.status = 412;
        sendError(res, method, { status: 412, code: 'PreconditionFailed' });
        return;
      }
      seen.status = upRes.statusCode ?? 0;
      const headers = { ...upRes.headers, ...(method === 'HEAD' && ok ? (fx.headHeaders.get(key) ?? {}) : {}) };
      const lie = method === 'GET' && ok ? fx.bodyFault?.(seen) : undefined;
      if (lie !== undefined) {
        void serveLie(upRes, res, upRes.statusCode ?? 200, headers, lie).catch(() => res.destroy());
        return;
      }
      res.writeHead(upRes.statusCode ?? 500, headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  }
  return fx;
}

async function serveLie(upRes: IncomingMessage, res: ServerResponse, status: number, headers: IncomingHttpHeaders, lie: S3BodyFault): Promise<void> {
  const out = { ...headers };
  const shift = lie.shiftContentRange;
  if (shift !== undefined && typeof out['content-range'] === 'string') {
    out['content-range'] = out['content-range'].replace(/^bytes (\d+)-(\d+)\//, (_m, a: string, b: string) => `bytes ${Number(a) + shift}-${Number(b) + shift}/`);
  }
  // Without Content-Length Node sends chunked, which is what lets the body run past the object.
  if (lie.endless === true) delete out['content-length'];
  res.writeHead(status, out);
  const piece = lie.bytesPerSecond === undefined ? Infinity : Math.max(1, Math.floor(lie.bytesPerSecond / 20));
  for await (const chunk of upRes as AsyncIterable<Buffer>) {
    for (let at = 0; at < chunk.length; at += piece) {
      if (!(await send(res, chunk.subarray(at, at + piece)))) return;
      if (lie.bytesPerSecond !== undefined) await sleep(50);
    }
  }
  const junk = Buffer.alloc(64 * 1024, 0x5a);
  while (lie.endless === true) if (!(await send(res, junk))) return;
  res.end();
}

/** One write, waiting out back-pressure; false once the client is gone. */
function send(res: ServerResponse, chunk: Buffer): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  if (res.write(chunk)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = (): void => done(true);
    const onClose = (): void => done(false);
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

function sendError(res: ServerResponse, method: string, e: CannedError): void {
  const body = method === 'HEAD' ? '' : `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${e.code}</Code><Message>${e.code}</Message><RequestId>test</RequestId></Error>`;
  res.writeHead(e.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), ...(e.headers ?? {}) });
  res.end(body);
}

async function putObject(client: S3Client, bucket: string, key: string, body: Buffer, partSize: number | undefined): Promise<string> {
  if (partSize === undefined) {
    const r = await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    return r.ETag ?? '';
  }
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const parts: { ETag: string; PartNumber: number }[] = [];
  for (let off = 0, n = 1; off < body.length; off += partSize, n++) {
    const r = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: n, Body: body.subarray(off, off + partSize) }));
    parts.push({ ETag: r.ETag ?? '', PartNumber: n });
  }
  const r = await client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: parts } }));
  return r.ETag ?? '';
}
