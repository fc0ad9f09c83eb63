import type { IncomingHttpHeaders } from 'node:http';
import { shown } from '../remote-value.js';
import { byteCount } from '../transfer/content-range.js';
import { headerValue } from '../transfer/http.js';

/** What the Hub's first answer to a resolve says about the file, each value checked. */
export interface ResolveHeaders {
  /** X-Linked-Etag of an LFS file: the sha256 of its content (lowercase hex). */
  readonly linkedEtag?: string | undefined;
  /** X-Linked-Size: its size in bytes. */
  readonly linkedSize?: number | undefined;
  /** X-Repo-Commit: the commit the Hub resolved the request at. */
  readonly repoCommit?: string | undefined;
}

/**
 * X-Linked-Etag, X-Linked-Size and X-Repo-Commit of a resolve answer. Each is absent, or exactly
 * what it must be: a sha256 (quoted as an ETag is, or bare), a whole number of bytes (exact as
 * a double), a commit id (40 lowercase hex); anything else, a header sent twice (joined with a
 * comma) included, is a problem named here, escaped and cut short, since it comes from a mirror
 * we do not control.
 */
export function readResolveHeaders(h: IncomingHttpHeaders): ResolveHeaders | { readonly problem: string } {
  const etag = headerValue(h, 'x-linked-etag');
  const size = headerValue(h, 'x-linked-size');
  const commit = headerValue(h, 'x-repo-commit');
  const m = etag === undefined ? undefined : /^(?:"([0-9a-fA-F]{64})"|([0-9a-fA-F]{64}))$/.exec(etag.trim());
  const hex = m?.[1] ?? m?.[2];
  if (etag !== undefined && hex === undefined) return { problem: `an X-Linked-Etag that is not a sha256 (${shown(etag)})` };
  const bytes = size === undefined ? undefined : byteCount(size.trim());
  if (size !== undefined && bytes === undefined) return { problem: `an X-Linked-Size that is not a size (${shown(size)})` };
  if (commit !== undefined && !/^[0-9a-f]{40}$/.test(commit.trim())) return { problem: `an X-Repo-Commit that is not a commit id (${shown(commit)})` };
  return { linkedEtag: hex?.toLowerCase(), linkedSize: bytes, repoCommit: commit?.trim() };
}
