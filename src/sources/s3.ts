import { PassThrough, Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import type { Config } from '../config.js';
import { readableBody } from '../transfer/body-reader.js';
import { ModelsyncError } from '../errors.js';
import { shown } from '../remote-value.js';
import type { Entry, Manifest, S3Ref } from '../manifest/types.js';
import { proxyFor } from '../proxy/proxy-for.js';
import type { ProxyEndpoint } from '../proxy/proxy-settings.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import { parseContentRange } from '../transfer/content-range.js';
import { withRetry, type RetryPolicy } from '../transfer/retry.js';
import { createS3Client, s3Settings, type S3Settings } from './s3-client.js';
import { blobOnMirror, uploadBlobIfAbsent } from './s3-upload.js';
import type { S3MirrorRef } from '../manifest/mirror-uri.js';
import { isVagueHeadFailure, s3Error, sdkErrorShape, sourceChanged, type S3Failure } from './s3-errors.js';
import type { ContentKey } from '../content-key.js';
import type { OpenBody, OpenRequest, RemoteFile, Source } from './source.js';

export interface S3SourceOptions {
  readonly config: Config;
  readonly manifest: Manifest;
  readonly idleTimeoutMs: number;
  readonly connections: ConnectionBudget;
}

/** What HeadObject says about an object. */
export interface S3Object {
  readonly ref: S3Ref;
  readonly size: number;
  /** Quoted, as S3 sends it; undefined only from servers that send none. */
  readonly etag: string | undefined;
  /** Hex sha256 of the whole object, from a full-object ChecksumSHA256 (never a composite one). */
  readonly sha256: string | undefined;
}

interface S3Locator {
  readonly bucket: string;
  readonly key: string;
  readonly etag: string | undefined;
}

/**
 * s3:// sources through the AWS SDK (its default credential chain, region and endpoint
 * settings). An ETag is not a sha256, so the manifest's (or lock's) sha256 is the truth; a
 * full-object ChecksumSHA256 is only a cross-check. Every ranged GET is pinned to the ETag the
 * HEAD saw with If-Match, so an object replaced mid-download fails fast as E_SOURCE_CHANGED
 * instead of splicing two versions.
 */
export class S3Source implements Source {
  private readonly settings: S3Settings;
  private readonly client: S3Client;
  private readonly policy: RetryPolicy;
  private region: string | undefined;
  /** The proxy requests to the endpoint go through, for messages. */
  private readonly proxy: ProxyEndpoint | undefined;

  constructor(readonly opts: S3SourceOptions) {
    const t = opts.config.tunables;
    this.settings = s3Settings(opts.config, opts.manifest.s3);
    this.region = this.settings.region;
    this.client = createS3Client(this.settings, opts.idleTimeoutMs, opts.connections.sdkSockets, opts.config.proxies, { minRate: t.minRate, windowMs: t.minRateWindowMs });
    this.proxy = proxyFor(opts.config.proxies, new URL(this.settings.endpoint ?? 'https://s3.amazonaws.com'));
    this.policy = { attempts: t.retryAttempts, baseMs: t.retryBaseMs, maxWaitMs: t.retryMaxWaitMs };
  }

  resolve(entries: readonly Entry[], signal: AbortSignal): Promise<RemoteFile[]> {
    return Promise.all(
      entries.map(async (e) => {
        const ref = s3Ref(e);
        if (e.sha256 === undefined) {
          throw new ModelsyncError('E_MANIFEST', `${ref.uri} has no sha256 (an S3 ETag is not one): add it to the manifest, or run "modelsync lock"`, { entry: e.index, url: ref.uri });
        }
        const obj = await this.describe(e, signal);
        if (e.size !== undefined && e.size !== obj.size) {
          throw new ModelsyncError('E_SIZE_MISMATCH', `${ref.uri} has ${obj.size} bytes, the manifest${e.pinned ? ' or lock' : ''} says ${e.size}`, { entry: e.index, url: ref.uri });
        }
        if (obj.sha256 !== undefined && obj.sha256 !== e.sha256) {
          throw new ModelsyncError('E_HASH_MISMATCH', `${ref.uri}: S3's full-object ChecksumSHA256 is ${obj.sha256}, the manifest says ${e.sha256}`, { entry: e.index, url: ref.uri });
        }
        return this.fileFor(obj, { algo: 'sha256', hex: e.sha256 });
      }),
    );
  }

  /** HeadObject, retried like any transfer; a bodiless 403/404/301 is asked again to name itself. */
  describe(entry: Entry, signal: AbortSignal): Promise<S3Object> {
    return this.describeRef(s3Ref(entry), signal);
  }

  /** HeadObject of any object this source's client reaches (a mirror's blob, say). */
  async describeRef(ref: S3Ref, signal: AbortSignal): Promise<S3Object> {
    return withRetry(
      async () => {
        let head: HeadObjectCommandOutput;
        try {
          head = await this.client.send(new HeadObjectCommand({ Bucket: ref.bucket, Key: ref.key, ChecksumMode: 'ENABLED' }), { abortSignal: signal });
        } catch (e) {
          throw await this.headError(ref, e, signal);
        }
        if (!isByteCount(head.ContentLength)) throw new ModelsyncError('E_S3', `${ref.uri}: HeadObject gave no usable size (${shown(head.ContentLength)})`, { url: ref.uri });
        return { ref, size: head.ContentLength, etag: head.ETag, sha256: fullObjectSha256(head) };
      },
      this.policy,
      { signal },
    );
  }

  /** The RemoteFile for an object whose content must hash to `key`. */
  fileFor(obj: S3Object, key: ContentKey): RemoteFile {
    const locator: S3Locator = { bucket: obj.ref.bucket, key: obj.ref.key, etag: obj.etag };
    return { key, size: obj.size, version: `s3:${obj.etag ?? `size-${obj.size}`}`, uri: obj.ref.uri, locator };
  }

  async open(file: RemoteFile, req: OpenRequest): Promise<OpenBody> {
    const loc = file.locator as S3Locator;
    const f = this.failure(loc.bucket, file.uri);
    let out;
    try {
      out = await this.client.send(
        new GetObjectCommand({
          Bucket: loc.bucket,
          Key: loc.key,
          ...(loc.etag === undefined ? {} : { IfMatch: loc.etag }),
          ...(req.range === undefined ? {} : { Range: `bytes=${req.range.start}-${req.range.end - 1}` }),
        }),
        { abortSignal: req.signal },
      );
    } catch (e) {
      throw s3Error(e, f);
    }
    const body = out.Body;
    if (!(body instanceof Readable)) throw new Error('the AWS SDK returned a body that is not a Node stream');
    // Servers that ignore If-Match still name the version they sent.
    if (loc.etag !== undefined && out.ETag !== undefined && out.ETag !== loc.etag) {
      body.destroy();
      throw sourceChanged(f);
    }
    const length = isByteCount(out.ContentLength) ? out.ContentLength : undefined;
    if (out.$metadata.httpStatusCode !== 206) return { status: 200, range: undefined, length, body: readableBody(guardBody(body, req.signal, f)) };
    const range = parseContentRange(out.ContentRange);
    if (range === undefined || (length !== undefined && length !== range.end - range.start)) {
      body.destroy();
      throw new ModelsyncError('E_RANGE', `${file.uri}: 206 without a usable Content-Range (${shown(out.ContentRange)}, Content-Length ${length ?? 'none'})`, { url: file.uri });
    }
    return { status: 206, range, length, body: readableBody(guardBody(body, req.signal, f)) };
  }

  /** True when the mirror holds the blob under its name (HeadObject; a 404 or 403 is false). */
  mirrorHas(mirror: S3MirrorRef, key: ContentKey, size: number | undefined, signal: AbortSignal): Promise<boolean> {
    return blobOnMirror({ client: this.client, mirror, key, size, policy: this.policy, signal, failure: (uri) => this.failure(mirror.bucket, uri) });
  }

  /** Put a store blob on the mirror unless it is there (see uploadBlobIfAbsent). */
  uploadBlob(u: { mirror: S3MirrorRef; key: ContentKey; file: string; size: number; signal: AbortSignal }): Promise<'present' | 'uploaded'> {
    return uploadBlobIfAbsent({ ...u, client: this.client, queueSize: 1, policy: this.policy, failure: (uri) => this.failure(u.mirror.bucket, uri) });
  }

  private failure(bucket: string, uri: string): S3Failure {
    return { uri, bucket, settings: this.settings, region: this.region, proxy: this.proxy };
  }

  /** HEAD has no body: repeat the request as a 1-byte GET, whose error body says what went wrong. */
  private async headError(ref: S3Ref, e: unknown, signal: AbortSignal): Promise<ModelsyncError> {
    if (this.region === undefined && sdkErrorShape(e).status !== undefined) this.region = await this.client.config.region().catch(() => undefined);
    const f = this.failure(ref.bucket, ref.uri);
    if (!isVagueHeadFailure(e)) return s3Error(e, f);
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key, Range: 'bytes=0-0' }), { abortSignal: signal });
      if (out.Body instanceof Readable) out.Body.destroy();
    } catch (named) {
      if (sdkErrorShape(named).status !== undefined) return s3Error(named, f);
    }
    return s3Error(e, f);
  }
}

/** A size S3 (or a server posing as it) may give: a whole number of bytes, exact as a double. */
function isByteCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

function s3Ref(e: Entry): S3Ref {
  if (e.source.kind !== 's3') throw new Error('S3Source given a non-s3 entry');
  return e.source;
}

/** Only a FULL_OBJECT checksum is a sha256 of the bytes; a composite one ("...-N") is not. */
function fullObjectSha256(head: HeadObjectCommandOutput): string | undefined {
  const b64 = head.ChecksumSHA256;
  if (b64 === undefined || b64.includes('-')) return undefined;
  if (head.ChecksumType !== undefined && head.ChecksumType !== 'FULL_OBJECT') return undefined;
  const raw = Buffer.from(b64, 'base64');
  return raw.length === 32 ? raw.toString('hex') : undefined;
}

/**
 * The SDK's body, with its socket errors turned into our typed, retryable errors (the chunk
 * engine retries and resumes on those) and torn down when the download is aborted.
 */
function guardBody(body: Readable, signal: AbortSignal, f: S3Failure): Readable {
  const out = new PassThrough();
  const onAbort = (): void => {
    body.destroy();
    out.destroy(new ModelsyncError('E_ABORTED', `${f.uri}: download aborted`, { url: f.uri }));
  };
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  body.once('error', (e) => out.destroy(bodyError(e, f)));
  body.once('close', () => signal.removeEventListener('abort', onAbort));
  out.once('close', () => {
    if (!body.destroyed) body.destroy();
  });
  body.pipe(out);
  return out;
}

function bodyError(e: unknown, f: S3Failure): ModelsyncError {
  try {
    return s3Error(e, f);
  } catch {
    return new ModelsyncError('E_NETWORK', `${f.uri}: the download stream failed`, { url: f.uri, retryable: true, cause: e });
  }
}
