import type { ContentKey } from '../content-key.js';
import { ModelsyncError } from '../errors.js';
import { mirrorObjectKey, type HttpsMirrorRef, type MirrorRef, type S3MirrorRef } from '../manifest/mirror-uri.js';
import type { HttpsRef } from '../manifest/types.js';
import { contentVersion } from '../transfer/journal.js';
import { withRetry, type RetryPolicy } from '../transfer/retry.js';
import type { HttpsSource } from './https.js';
import type { S3Source } from './s3.js';
import { isMissingKey } from './s3-errors.js';
import type { RemoteFile, Source } from './source.js';

/** A place that may hold a copy of a blob, by its sha256: tried before the blob's origin. */
export interface Mirror {
  readonly ref: MirrorRef;
  /** Opens what `locate` returned (with ranges, resumable, like any source). */
  readonly source: Source;
  /**
   * The mirror's copy of the blob, checked against what is known of it (size, S3's full-object
   * checksum); undefined when the mirror has none. Any other failure is thrown, after retries.
   */
  locate(key: ContentKey, size: number | undefined, signal: AbortSignal): Promise<RemoteFile | undefined>;
}

export function s3Mirror(ref: S3MirrorRef, s3: S3Source): Mirror {
  return {
    ref,
    source: s3,
    async locate(key, size, signal) {
      const objectKey = mirrorObjectKey(ref.prefix, key);
      const uri = `s3://${ref.bucket}/${objectKey}`;
      let obj;
      try {
        obj = await s3.describeRef({ kind: 's3', bucket: ref.bucket, key: objectKey, uri }, signal);
      } catch (e) {
        if (isMissingKey(e)) return undefined;
        throw e;
      }
      checkSize(uri, obj.size, size);
      if (obj.sha256 !== undefined && obj.sha256 !== key.hex) {
        throw new ModelsyncError('E_HASH_MISMATCH', `${uri}: S3's full-object ChecksumSHA256 is ${obj.sha256}, not the ${key.hex} its name promises`, { url: uri });
      }
      // The ETag stays in the locator: If-Match still pins every range to the object HEAD saw.
      return { ...s3.fileFor(obj, key), version: contentVersion(key) };
    },
  };
}

/**
 * A read-only HTTP(S) mirror. Its size comes from a one-byte ranged GET (our client sends no
 * HEAD), which also tells a miss (404, 410) apart before any chunk is sent.
 */
export function httpsMirror(ref: HttpsMirrorRef, https: HttpsSource, policy: RetryPolicy): Mirror {
  return {
    ref,
    source: https,
    async locate(key, size, signal) {
      const url = new URL(`${key.algo}/${key.hex}`, ref.base).toString();
      const locator: HttpsRef = { kind: 'https', url, uri: url };
      const probe: RemoteFile = { key, size, version: contentVersion(key), uri: url, locator };
      let total: number | undefined;
      try {
        const res = await withRetry(() => https.open(probe, { range: { start: 0, end: 1 }, signal }), policy, { signal });
        res.body.destroy();
        total = res.status === 206 ? res.range?.total : res.length;
      } catch (e) {
        if (e instanceof ModelsyncError && e.code === 'E_NOT_FOUND') return undefined;
        throw e;
      }
      if (total !== undefined) checkSize(url, total, size);
      return { ...probe, size: size ?? total };
    },
  };
}

function checkSize(uri: string, got: number, want: number | undefined): void {
  if (want !== undefined && got !== want) throw new ModelsyncError('E_SIZE_MISMATCH', `${uri} has ${got} bytes, the blob has ${want}`, { url: uri });
}
