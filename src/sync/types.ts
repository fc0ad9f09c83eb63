import type { Entry } from '../manifest/types.js';
import type { ContentKey } from '../content-key.js';
import type { RemoteFile } from '../sources/source.js';
import type { Removal } from './removed.js';

export type EntryState = 'pending' | 'present' | 'resolving' | 'queued' | 'downloading' | 'waiting-peer' | 'verifying' | 'published' | 'failed';

export interface EntryResult {
  readonly index: number;
  readonly dest: string;
  readonly source: string;
  readonly required: boolean;
  readonly state: 'present' | 'published' | 'failed';
  readonly key?: ContentKey | undefined;
  readonly size?: number | undefined;
  readonly commit?: string | undefined;
  readonly error?: { readonly code: string; readonly message: string } | undefined;
}

/**
 * Bytes of blobs by where they came from: `origin` (the entry's own source) and `mirror` came
 * over the network (resumed bytes not counted); `volume` is blobs this sync needed and found
 * committed in the store (already there, or committed by a peer on the shared volume meanwhile).
 */
export interface BytesBySource {
  readonly origin: number;
  readonly mirror: number;
  readonly volume: number;
}

export const NO_BYTES: BytesBySource = Object.freeze({ origin: 0, mirror: 0, volume: 0 });

export function addBytes(a: BytesBySource, b: BytesBySource): BytesBySource {
  return { origin: a.origin + b.origin, mirror: a.mirror + b.mirror, volume: a.volume + b.volume };
}

export interface SyncReport {
  readonly ok: boolean;
  readonly entries: readonly EntryResult[];
  /** Dests the manifest published before and names no more (sync/removed.ts); none after a partial sync. */
  readonly removed?: readonly Removal[] | undefined;
  /** Bytes that came over the network in this sync (of model content, failed downloads included). */
  readonly bytesFetched: number;
  /** Absent from a warm start's report: nothing was needed. */
  readonly bytesBySource?: BytesBySource | undefined;
  readonly durationMs: number;
}

/** Hooks for progress bars, /status and metrics. All optional, all synchronous. */
export interface SyncEvents {
  entryState?(entry: Entry, state: EntryState, detail?: { error?: string; size?: number; key?: ContentKey }): void;
  bytes?(n: number, key: ContentKey): void;
  retry?(uri: string, reason: string, waitMs: number): void;
  cacheHit?(entry: Entry): void;
  /** A civitai entry written without dest got its derived one (from the state DB or Civitai). */
  placed?(entry: Entry): void;
  verifyFailure?(uri: string): void;
  /** A blob job finished: its bytes by where they came from (see BytesBySource). */
  sourced?(bytes: BytesBySource): void;
  /** A mirror has no copy of a blob. */
  mirrorMiss?(mirror: string): void;
  /** A mirror failed for a blob (error code); the next source is tried. */
  mirrorFailure?(mirror: string, code: string): void;
  /** A write-back to `mirror_write` finished: uploaded (bytes), already there, or failed. */
  mirrorWrite?(outcome: 'uploaded' | 'present' | 'failed', bytes: number): void;
}

/** One unit of work: distinct content, fetched once, published to every dest that wants it. */
export interface BlobJob {
  readonly key: ContentKey;
  readonly file: RemoteFile;
  readonly entries: readonly Entry[];
  /**
   * Trust on first use (an on-demand https:// or s3:// request without a sha256): `key` only
   * names this download (its partial, never a blob); the bytes' own sha256 becomes the blob's key.
   */
  readonly learn?: boolean | undefined;
}
