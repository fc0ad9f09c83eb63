import type { ContentKey } from '../content-key.js';
import { isLoopback } from '../loopback.js';

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** An S3 bucket (and prefix) holding blobs at PREFIX/sha256/<hex>. */
export interface S3MirrorRef {
  readonly kind: 's3';
  readonly bucket: string;
  /** Empty, or ending in "/". */
  readonly prefix: string;
  /** s3://BUCKET/PREFIX, normalised to end in "/". */
  readonly uri: string;
}

/** A read-only HTTP(S) mirror: blobs at BASE/sha256/<hex>. */
export interface HttpsMirrorRef {
  readonly kind: 'https';
  /** Ends in "/". */
  readonly base: string;
  readonly uri: string;
}

export type MirrorRef = S3MirrorRef | HttpsMirrorRef;

/**
 * A `mirrors:` or `mirror_write:` URI. A mirror is a prefix, not an object: no query, no
 * fragment, no credentials (the query is where a presigned URL keeps its signature, and one
 * signature cannot cover every blob under a prefix). Path segments "." and ".." are refused:
 * they would let PREFIX/sha256/<hex> point somewhere the operator did not write.
 */
export function parseMirrorUri(uri: string): MirrorRef | { error: string } {
  if (uri.includes('\0')) return { error: 'contains a NUL byte' };
  if (uri.startsWith('s3://')) {
    const rest = uri.slice('s3://'.length);
    const slash = rest.indexOf('/');
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    if (!BUCKET.test(bucket)) return { error: `bad bucket name "${bucket}"` };
    const raw = slash < 0 ? '' : rest.slice(slash + 1);
    const segs = raw.split('/').filter((s, i, all) => !(s === '' && i === all.length - 1));
    if (raw !== '' && segs.some((s) => s === '' || s === '.' || s === '..')) return { error: `bad prefix "${raw}" (empty, "." or ".." segments)` };
    const prefix = raw === '' ? '' : `${segs.join('/')}/`;
    return { kind: 's3', bucket, prefix, uri: `s3://${bucket}/${prefix}` };
  }
  if (/^https?:\/\//i.test(uri)) {
    let u: URL;
    try {
      u = new URL(uri);
    } catch {
      return { error: 'not a valid URL' };
    }
    if (u.username || u.password) return { error: 'credentials in the URL are not allowed (use MODELSYNC_HTTP_TOKENS)' };
    if (u.search !== '' || u.hash !== '' || uri.includes('?') || uri.includes('#')) return { error: 'a mirror is a prefix: no query or fragment' };
    if (u.protocol === 'http:' && !isLoopback(u.hostname)) return { error: 'plain http:// is refused (use https://)' };
    // new URL() already resolved "." and "..": compare with what was written.
    const written = uri.replace(/^[a-z]+:\/\/[^/]*/i, '');
    if (written.split('/').some((s) => s === '.' || s === '..' || /^%2e/i.test(s))) return { error: 'bad path ("." or ".." segments)' };
    const base = u.pathname.endsWith('/') ? u.toString() : `${u.toString()}/`;
    return { kind: 'https', base, uri: base };
  }
  return { error: 'a mirror must be s3://BUCKET/PREFIX/ or https://HOST/PREFIX/' };
}

/** Where a mirror keeps a blob: PREFIX/sha256/<hex> (only sha256 blobs are mirrored). */
export function mirrorObjectKey(prefix: string, key: ContentKey): string {
  return `${prefix}${key.algo}/${key.hex}`;
}
