import { createReadStream } from 'node:fs';
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { ContentKey } from '../content-key.js';
import { ModelsyncError } from '../errors.js';
import { mirrorObjectKey, type S3MirrorRef } from '../manifest/mirror-uri.js';
import { isTooSlow } from '../transfer/rate-floor.js';
import { withRetry, type RetryPolicy } from '../transfer/retry.js';
import { s3Error, sdkErrorShape, type S3Failure } from './s3-errors.js';

export interface MirrorBlob {
  readonly client: S3Client;
  readonly mirror: S3MirrorRef;
  readonly key: ContentKey;
  /** The blob's size, when known: an object of another size under its name does not count. */
  readonly size: number | undefined;
  readonly policy: RetryPolicy;
  readonly signal: AbortSignal;
  readonly failure: (uri: string) => S3Failure;
}

/**
 * Whether the mirror holds the blob (HeadObject, retried like any request). 404 is no; so is
 * 403, S3's answer for a missing key to a caller without s3:ListBucket (a write that is really
 * refused fails at the upload, with its own message). An object of another size under a content
 * name is a torn or foreign upload: it does not count, and is replaced.
 */
export function blobOnMirror(u: MirrorBlob): Promise<boolean> {
  const objectKey = mirrorObjectKey(u.mirror.prefix, u.key);
  const f = u.failure(`s3://${u.mirror.bucket}/${objectKey}`);
  return withRetry(
    async () => {
      try {
        const head = await u.client.send(new HeadObjectCommand({ Bucket: u.mirror.bucket, Key: objectKey }), { abortSignal: u.signal });
        return u.size === undefined || head.ContentLength === u.size;
      } catch (e) {
        const s = sdkErrorShape(e);
        if (s.status === 404 || s.status === 403) return false;
        throw s3Error(e, f);
      }
    },
    u.policy,
    { signal: u.signal },
  );
}

/** S3 allows 10,000 parts; some S3-compatible servers fewer. */
const MAX_PARTS = 9_000;
const MIN_PART = 8 * 1024 * 1024;

export interface UploadBlob extends MirrorBlob {
  /** The committed, verified store blob: only ever read. */
  readonly file: string;
  readonly size: number;
  /** Parts in flight at once (each buffers one part in memory). */
  readonly queueSize: number;
}

/**
 * Put a store blob at PREFIX/sha256/<hex> unless it is there already (HeadObject first), as a
 * multipart upload for large blobs. Two nodes uploading the same blob at once is harmless: the
 * name is the content's hash, so both write the same bytes and S3 keeps one (last writer wins);
 * with the same part size the ETag is the same too, so a reader pinned to the first one's ETag
 * reads on, and a server that gives another ETag costs that reader a fall-through to the next
 * source, never a wrong byte (readers hash everything). A failed multipart upload is aborted
 * (lib-storage's default), so it leaves no parts billed behind. Each request's body is held to
 * the minimum rate (s3-upload-floor.ts); a cut is retried from the start, and no attempt ever
 * counts as progress, so a server that reads too slowly ends the upload after the attempts.
 */
export async function uploadBlobIfAbsent(u: UploadBlob): Promise<'present' | 'uploaded'> {
  const objectKey = mirrorObjectKey(u.mirror.prefix, u.key);
  const uri = `s3://${u.mirror.bucket}/${objectKey}`;
  const f = u.failure(uri);
  const present = await blobOnMirror(u);
  if (present) return 'present';
  const partSize = Math.max(MIN_PART, Math.ceil(u.size / MAX_PARTS));
  await withRetry(
    async () => {
      const upload = new Upload({
        client: u.client,
        queueSize: u.queueSize,
        partSize,
        leavePartsOnError: false,
        params: { Bucket: u.mirror.bucket, Key: objectKey, Body: createReadStream(u.file), ContentLength: u.size, ContentType: 'application/octet-stream' },
      });
      const onAbort = (): void => void upload.abort().catch(() => undefined);
      u.signal.addEventListener('abort', onAbort, { once: true });
      try {
        await upload.done();
      } catch (e) {
        if (u.signal.aborted) throw new ModelsyncError('E_ABORTED', `${uri}: upload aborted`, { url: uri, cause: e });
        if (e instanceof ModelsyncError && isTooSlow(e)) throw new ModelsyncError('E_TOO_SLOW', `${uri}: ${e.message}`, { url: uri, retryable: true, cause: e });
        throw s3Error(e, f);
      } finally {
        u.signal.removeEventListener('abort', onAbort);
      }
    },
    u.policy,
    { signal: u.signal },
  );
  return 'uploaded';
}
