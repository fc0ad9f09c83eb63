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
