/** errno and TLS codes of failed connections, classified once for every client (our HTTP, S3, proxies). */

/**
 * Socket-level failures that the same request will meet again: the host name does not exist
 * (ENOTFOUND, an authoritative "no such name") or the TLS layer rejected the server's
 * certificate (expired, self-signed, unknown issuer, wrong host). EAI_AGAIN is not among them:
 * it is a resolver that did not answer in time, which the next try often gets past.
 */
const PERMANENT = new Set([
  'ENOTFOUND',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'HOSTNAME_MISMATCH',
  'INVALID_CA',
]);

/** Whether a failed connection's errno / TLS code says retrying is pointless. */
export function isPermanentNetworkCode(code: string): boolean {
  return PERMANENT.has(code);
}

/** Whether a failure's code is a name lookup that failed (for good or for now). */
export function isDnsFailure(code: string): boolean {
  return code === 'ENOTFOUND' || code === 'EAI_AGAIN';
}
