import type { ContentKey } from '../content-key.js';
import type { Entry } from '../manifest/types.js';
import type { BodyReader } from '../transfer/body-reader.js';

/** One remote file, resolved: where it is, what it must hash to, and which version it is. */
export interface RemoteFile {
  readonly key: ContentKey;
  /** Bytes, when the source or manifest says. */
  readonly size: number | undefined;
  /** Approximate bytes where the exact size is unknown until the download (Civitai's sizeKB): planning only. */
  readonly sizeHint?: number | undefined;
  /** Identifies the exact remote version (Hub commit, S3 ETag, ...): a partial download is resumed only when it is unchanged. */
  readonly version: string;
  /** The source URI, for messages and logs (no secret, no query string). */
  readonly uri: string;
  /** Source-specific handle the source's `open` understands. */
  readonly locator: unknown;
  /** Hub commit the file was resolved at, for status and lock files. */
  readonly commit?: string | undefined;
}

/** An open response body: the caller checks that it is the range it asked for. */
export interface OpenBody {
  /** 206 means `range` is set; 200 means the whole file, whatever was asked. */
  readonly status: 200 | 206;
  readonly range: { readonly start: number; readonly end: number; readonly total: number | undefined } | undefined;
  /** Body length as declared by the server, if it declared one. */
  readonly length: number | undefined;
  readonly body: BodyReader;
  /** Where the bytes come from (origin only), for messages about a broken body. */
  readonly origin?: string | undefined;
}

export interface OpenRequest {
  /** Bytes [start, end) of the file; undefined for the whole file. */
  readonly range: { readonly start: number; readonly end: number } | undefined;
  readonly signal: AbortSignal;
}

export interface Source {
  /** Resolve entries of this source's kind; the result is aligned with the input. */
  resolve(entries: readonly Entry[], signal: AbortSignal): Promise<RemoteFile[]>;
  open(file: RemoteFile, req: OpenRequest): Promise<OpenBody>;
  /**
   * The host whose connections a file's requests take (transfer/budget.ts adapts a connection
   * count per host): where its bytes come from, as far as the source can tell before asking.
   * Without it, the host of the file's URI.
   */
  host?(file: RemoteFile): string;
}
