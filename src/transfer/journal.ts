import { readFile } from 'node:fs/promises';
import { errnoCode } from '../errors.js';
import { writeJsonAtomic } from '../fs/atomic-write.js';
import { withReopen } from '../fs/estale.js';
import { MIN_CHUNK_SIZE } from './chunks.js';

/**
 * The download journal lives beside its partial file in the store, not in the local state DB:
 * a node that takes over a dead peer's download on the shared volume must be able to read it.
 * `written` is recorded only after the partial's bytes were fdatasync'ed, so it is on disk;
 * `cached` may be ahead of it and is trusted only under the same `boot` (see journal-flusher.ts).
 */
export interface Journal {
  readonly v: 1;
  /** RemoteFile.version: the journal is void when the source changed. */
  readonly version: string;
  readonly size: number;
  readonly chunkSize: number;
  /** Bytes written from the start of each chunk. */
  readonly written: readonly number[];
  /** Kernel boot id under which `cached` was noted. */
  readonly boot?: string;
  /** Bytes written from the start of each chunk, maybe still only in the page cache. */
  readonly cached?: readonly number[];
}

/**
 * The journal, or undefined when there is none or it is not one of ours. A read error that
 * outlasts the reopen retries is thrown: "no journal" would make the caller discard the bytes.
 */
export async function readJournal(file: string): Promise<Journal | undefined> {
  let raw: string;
  try {
    raw = await withReopen(() => readFile(file, 'utf8'));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const j = JSON.parse(raw) as Partial<Journal>;
    if (j.v !== 1 || typeof j.version !== 'string' || typeof j.size !== 'number' || typeof j.chunkSize !== 'number' || !Array.isArray(j.written)) return undefined;
    // A resume takes the journal's layout: a chunk size below the smallest --chunk-size would
    // make a huge chunk table out of a damaged file on the volume.
    if (!Number.isInteger(j.chunkSize) || j.chunkSize < MIN_CHUNK_SIZE) return undefined;
    if (!j.written.every((n) => Number.isInteger(n) && n >= 0)) return undefined;
    return j as Journal;
  } catch {
    return undefined;
  }
}

export function writeJournal(file: string, j: Journal): Promise<void> {
  return writeJsonAtomic(file, j);
}

/**
 * The journal version of a blob that may come from more than one source (mirrors, then its
 * origin). A journal's version decides which partial may be resumed: RemoteFile.version names
 * one source's exact version (a Hub commit, an S3 ETag), so only that source resumes it. Where a
 * blob's sha256 is known before the download and mirrors are configured, every source of it
 * promises the same bytes, so the partial is named by its content instead and any of them may
 * resume it: a partial begun at the origin is finished from a mirror, or back. That is safe
 * because nothing is trusted until the whole file hashes to the key; a source that lied costs
 * the partial (discarded on the mismatch), never a wrong blob.
 */
export function contentVersion(key: { readonly algo: string; readonly hex: string }): string {
  return `content:${key.algo}-${key.hex}`;
}
