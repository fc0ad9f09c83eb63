/**
 * What content must hash to: sha256 for LFS/S3/HTTPS content, git blob sha1 for small Hub files.
 * A bottom module: sources, transfer, the store and the state DB all name content by it.
 */
export interface ContentKey {
  readonly algo: 'sha256' | 'gitsha1';
  readonly hex: string;
}

/** `sha256-<hex>`: the key as one string (refs, DB rows, dedupe maps). */
export function keyName(k: ContentKey): string {
  return `${k.algo}-${k.hex}`;
}

/**
 * The only shapes a content id, a commit or a store name may have. Every one of them names files
 * (STORE/blobs/<algo>/<xx>/<hex>, leases, partials), so a value from a Hub, a mirror, a lock file
 * or the state DB is checked against these before it is used, and again where a path is built.
 */
const HEX: Readonly<Record<ContentKey['algo'], RegExp>> = { sha256: /^[0-9a-f]{64}$/, gitsha1: /^[0-9a-f]{40}$/ };

/** A git commit id (what a Hub revision resolves to). */
export const COMMIT = /^[0-9a-f]{40}$/;

/** `sha256-<hex>` / `gitsha1-<hex>`: the names blobs, leases, partials and gc markers share. */
export const KEY_NAME = /^(sha256-[0-9a-f]{64}|gitsha1-[0-9a-f]{40})$/;

/** A sha256 as 64 lowercase hex, or a git blob sha1 as 40: nothing else can be a content id. */
export function isContentHex(algo: ContentKey['algo'], hex: unknown): hex is string {
  return typeof hex === 'string' && HEX[algo].test(hex);
}

export function isContentKey(key: { readonly algo: unknown; readonly hex: unknown }): key is ContentKey {
  return (key.algo === 'sha256' || key.algo === 'gitsha1') && isContentHex(key.algo, key.hex);
}

export function isCommit(v: unknown): v is string {
  return typeof v === 'string' && COMMIT.test(v);
}
