/**
 * One set of network failures that retrying cannot help (network-codes.ts), used by the HTTP
 * path, the S3 path and the proxy path alike: a name that does not exist and a rejected certificate are
 * permanent; a resolver that timed out (EAI_AGAIN) and a dropped connection are not.
 */
import { describe, expect, it } from 'vitest';
import { proxyUnreachable } from '../src/proxy/proxy-errors.js';
import { s3Error } from '../src/sources/s3-errors.js';
import { networkError } from '../src/transfer/network-error.js';

const errno = (code: string): Error => Object.assign(new Error(`connect ${code}`), { code });
const s3 = (e: unknown) => s3Error(e, { uri: 's3://b/k', bucket: 'b', region: undefined, settings: { endpoint: 'http://127.0.0.1:9', region: undefined, forcePathStyle: true, profile: undefined } });

const proxy = { protocol: 'http:', host: '127.0.0.1', port: 9, name: 'http://127.0.0.1:9', authorization: undefined, variable: 'HTTPS_PROXY' } as const;

const CASES = [
  ['EAI_AGAIN', true],
  ['ECONNRESET', true],
  ['ECONNREFUSED', true],
  ['ENOTFOUND', false],
  ['DEPTH_ZERO_SELF_SIGNED_CERT', false],
  ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', false],
  ['CERT_NOT_YET_VALID', false],
  ['ERR_TLS_CERT_ALTNAME_INVALID', false],
] as const;

describe('permanent network failures', () => {
  it.each(CASES)('%s: retryable %s, on the HTTP, S3 and proxy paths alike', (code, retryable) => {
    const http = networkError(errno(code), 'https://cdn.example/x?X-Amz-Signature=secret');
    expect(http).toMatchObject({ code: 'E_NETWORK', retryable, url: 'https://cdn.example/x?<redacted>' });
    expect(s3(errno(code))).toMatchObject({ code: 'E_NETWORK', retryable });
    expect(proxyUnreachable(proxy, 'cdn.example:443', errno(code))).toMatchObject({ code: 'E_PROXY', retryable });
  });

  it('a temporary DNS failure is named as one, like a missing name', () => {
    expect(networkError(errno('EAI_AGAIN'), 'https://cdn.example/x').message).toBe('cannot resolve host cdn.example (EAI_AGAIN)');
  });
});
