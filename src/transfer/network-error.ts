import { ModelsyncError } from '../errors.js';
import { isDnsFailure, isPermanentNetworkCode } from '../network-codes.js';
import { redactUrl } from '../redact.js';

function failureWords(code: string): string {
  if (isDnsFailure(code)) return 'cannot resolve host';
  return code.includes('CERT') || code === 'HOSTNAME_MISMATCH' || code === 'INVALID_CA' ? 'TLS certificate rejected for' : 'network error talking to';
}

/** Turn a socket-level failure into a typed error that names the host and carries no secret. */
export function networkError(e: unknown, url: URL | string): ModelsyncError {
  if (e instanceof ModelsyncError) return e;
  const u = typeof url === 'string' ? new URL(url) : url;
  const code = typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : '';
  return new ModelsyncError('E_NETWORK', `${failureWords(code)} ${u.host}${code ? ` (${code})` : ''}`, {
    url: redactUrl(u),
    retryable: !isPermanentNetworkCode(code),
    cause: e,
  });
}
