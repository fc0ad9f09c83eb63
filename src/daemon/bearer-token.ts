import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * A bearer token (MODELSYNC_CONTROL_TOKEN) as the servers that check it hold it: its digest
 * only, compared in constant time. Digests of equal length: neither the token's length nor how
 * many of its leading bytes are right shows in the answer's timing.
 */
export class BearerToken {
  private readonly digest: Buffer;

  constructor(token: string) {
    this.digest = digest(token);
  }

  /** Does this Authorization header carry the token (`Bearer TOKEN`)? */
  inHeader(authorization: string | undefined): boolean {
    const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? '');
    return m !== null && this.is(m[1] ?? '');
  }

  /** Is this the token (typed into a login form)? */
  is(candidate: string): boolean {
    return timingSafeEqual(digest(candidate), this.digest);
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}
