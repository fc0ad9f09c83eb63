import { ModelsyncError } from '../errors.js';
import { redactUrl } from '../redact.js';

const PERMANENT = new Set(['ENOTFOUND', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'ERR_TLS_CERT_ALTNAME_INVALID']);

/** Turn a socket-level failure into a typed error that names the host and carries no secret. */
export function networkError(e: unknown, url: URL | string): ModelsyncError {
  if (e instanceof ModelsyncError) return e;
  const u = typeof url === 'string' ? new URL(url) : url;
  const code = typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : '';
  const what = code === 'ENOTFOUND' ? 'cannot resolve host' : code.includes('CERT') ? 'TLS certificate rejected for' : 'network error talking to';
  return new ModelsyncError('E_NETWORK', `${what} ${u.host}${code ? ` (${code})` : ''}`, {
    url: redactUrl(u),
    retryable: !PERMANENT.has(code),
    cause: e,
  });
}
