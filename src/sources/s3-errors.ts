import { ModelsyncError } from '../errors.js';
import { isDnsFailure, isPermanentNetworkCode } from '../network-codes.js';
import { proxyAuthRequired } from '../proxy/proxy-errors.js';
import type { ProxyEndpoint } from '../proxy/proxy-settings.js';
import { endpointName, type S3Settings } from './s3-client.js';

/** What an S3 failure is about, for its message. Nothing here is secret. */
export interface S3Failure {
  /** s3://BUCKET/KEY */
  readonly uri: string;
  readonly bucket: string;
  readonly settings: S3Settings;
  /** The region requests were signed for, when known. */
  readonly region: string | undefined;
  /** The proxy in the way (HTTPS_PROXY / HTTP_PROXY), if any. */
  readonly proxy?: ProxyEndpoint | undefined;
}

interface SdkErrorShape {
  readonly name: string;
  readonly message: string;
  readonly code: string | undefined;
  readonly status: number | undefined;
  readonly bucketRegion: string | undefined;
}

/** The fields of an SDK or socket error we act on, read without trusting its type. */
export function sdkErrorShape(e: unknown): SdkErrorShape {
  const o = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
  const meta = o.$metadata as { httpStatusCode?: unknown } | undefined;
  const response = o.$response as { headers?: Record<string, unknown> } | undefined;
  const headerRegion = response?.headers?.['x-amz-bucket-region'];
  const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  return {
    name: str(o.name) ?? 'Error',
    message: str(o.message) ?? String(e),
    code: str(o.code) ?? str(o.Code),
    status: typeof meta?.httpStatusCode === 'number' ? meta.httpStatusCode : undefined,
    bucketRegion: str(headerRegion) ?? str(o.Region),
  };
}

/** HEAD answers carry no body, so S3 cannot say which 403/404/301 it meant. */
export function isVagueHeadFailure(e: unknown): boolean {
  const s = sdkErrorShape(e);
  return s.status !== undefined && [301, 400, 403, 404].includes(s.status) && !KNOWN_CODES.has(s.name);
}

const KNOWN_CODES = new Set([
  'NoSuchKey',
  'NoSuchBucket',
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'RequestTimeTooSkewed',
  'PermanentRedirect',
  'AuthorizationHeaderMalformed',
  'PreconditionFailed',
]);

const BAD_CREDENTIALS = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'TokenRefreshRequired']);
/** The credential providers the SDK's default chain tries, in its order, for "none found". */
export function credentialChain(profile: string | undefined): string {
  return [
    'environment (AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY)',
    `shared config and credentials files (profile "${profile ?? 'default'}"${profile === undefined ? ', AWS_PROFILE unset' : ''}, including SSO and credential_process)`,
    'web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN)',
    'container metadata (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI)',
    'EC2 instance metadata (IMDS)',
  ].join('; ');
}

/**
 * One typed, secret-free error for any S3 failure. Messages name the object, the endpoint and
 * what to do; never a key, a signature or a token (the SDK's own messages carry none either,
 * but they are only used where they are S3's words about the request).
 */
export function s3Error(e: unknown, f: S3Failure): ModelsyncError {
  if (e instanceof ModelsyncError) return e;
  const s = sdkErrorShape(e);
  const ctx = { url: f.uri, cause: e, ...(s.status === undefined ? {} : { status: s.status }) };
  const where = endpointName(f.settings);
  if (s.name === 'AbortError') return new ModelsyncError('E_ABORTED', `${f.uri}: request aborted`, ctx);
  if (s.name === 'CredentialsProviderError') {
    return new ModelsyncError('E_AUTH', `${f.uri}: no AWS credentials found; tried ${credentialChain(f.settings.profile)}`, ctx);
  }
  if (s.message === 'Region is missing') {
    return new ModelsyncError('E_CONFIG', `${f.uri}: no AWS region: set AWS_REGION, s3.region in the manifest, or a region in the AWS profile`, ctx);
  }
  if (s.status === undefined) return networkFailure(e, s, f, where);
  // Only a proxy asks for Proxy-Authorization: an absolute-form request's 407 is its answer.
  if (s.status === 407 && f.proxy !== undefined) return proxyAuthRequired(f.proxy, f.uri);
  const code = s.name;
  if (code === 'PreconditionFailed' || s.status === 412) return sourceChanged(f, e);
  if (code === 'NoSuchKey' || (code === 'NotFound' && s.status === 404)) {
    return new ModelsyncError('E_NOT_FOUND', `${f.uri}: no such key in bucket "${f.bucket}" (NoSuchKey, ${where})`, ctx);
  }
  if (code === 'NoSuchBucket') return new ModelsyncError('E_NOT_FOUND', `${f.uri}: bucket "${f.bucket}" does not exist (NoSuchBucket, ${where})`, ctx);
  if (s.bucketRegion !== undefined && (s.status === 301 || code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed' || s.status === 400)) {
    return new ModelsyncError(
      'E_CONFIG',
      `${f.uri}: bucket "${f.bucket}" is in region ${s.bucketRegion}, not ${f.region ?? 'the configured one'}: set s3.region: ${s.bucketRegion} in the manifest (or AWS_REGION=${s.bucketRegion})`,
      ctx,
    );
  }
  if (s.status === 301 || code === 'PermanentRedirect') {
    return new ModelsyncError('E_CONFIG', `${f.uri}: S3 says bucket "${f.bucket}" must be reached through another endpoint or region (${code}); set s3.region or s3.endpoint`, ctx);
  }
  if (BAD_CREDENTIALS.has(code)) {
    return new ModelsyncError('E_AUTH', `${f.uri}: ${where} rejected the AWS credentials (${code}); check the access key, secret and session token in use`, ctx);
  }
  if (code === 'RequestTimeTooSkewed') return new ModelsyncError('E_AUTH', `${f.uri}: this machine's clock is too far from ${where}'s (RequestTimeTooSkewed)`, ctx);
  if (code === 'AccessDenied' || s.status === 403) {
    return new ModelsyncError('E_AUTH', `${f.uri}: access denied (${code === 'AccessDenied' ? 'AccessDenied' : `HTTP ${s.status}`}, ${where}); the credentials in use need s3:GetObject on it`, ctx);
  }
  if (code === 'InvalidRange' || s.status === 416) return new ModelsyncError('E_RANGE', `${f.uri}: ${where} refused the byte range (InvalidRange)`, ctx);
  const retryable = s.status >= 500 || s.status === 429 || s.status === 408 || code === 'SlowDown' || code === 'RequestTimeout';
  const kind = s.status === 429 || code === 'SlowDown' ? 'E_RATE_LIMITED' : 'E_S3';
  return new ModelsyncError(kind, `${f.uri}: ${where} answered HTTP ${s.status} (${code})`, { ...ctx, retryable });
}

/** The object's ETag is no longer the one the download is pinned to (If-Match failed, or was ignored). */
export function sourceChanged(f: S3Failure, cause?: unknown): ModelsyncError {
  return new ModelsyncError('E_SOURCE_CHANGED', `${f.uri} was replaced while it was being downloaded (its ETag changed)`, { url: f.uri, cause });
}

function networkFailure(e: unknown, s: SdkErrorShape, f: S3Failure, where: string): ModelsyncError {
  const ctx = { url: f.uri, cause: e };
  if (s.name === 'TimeoutError' || s.code === 'ETIMEDOUT') {
    return new ModelsyncError('E_TIMEOUT', `${f.uri}: ${where} sent nothing for too long`, { ...ctx, retryable: true });
  }
  if (s.code !== undefined) {
    const what = isDnsFailure(s.code) ? 'cannot resolve' : s.code.includes('CERT') ? 'TLS certificate rejected by' : 'cannot reach';
    return new ModelsyncError('E_NETWORK', `${f.uri}: ${what} ${where} (${s.code})`, { ...ctx, retryable: !isPermanentNetworkCode(s.code) });
  }
  // A bug of ours keeps its stack; anything else is the SDK failing on a garbled answer.
  if (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError) throw e;
  return new ModelsyncError('E_S3', `${f.uri}: request to ${where} failed (${s.name}: ${s.message})`, { ...ctx, retryable: true });
}

/**
 * A mirror's "no such blob": 404, or 403 AccessDenied, which is how S3 answers a missing key to
 * a reader without s3:ListBucket. A missing bucket or rejected credentials are not misses: they
 * are a mirror that cannot serve anything, and are reported as failures.
 */
export function isMissingKey(e: unknown): boolean {
  if (!(e instanceof ModelsyncError)) return false;
  const s = sdkErrorShape(e.cause);
  if (e.code === 'E_NOT_FOUND') return s.name !== 'NoSuchBucket';
  return e.code === 'E_AUTH' && s.status === 403 && (s.name === 'AccessDenied' || s.name === 'Forbidden' || s.name === '403');
}
