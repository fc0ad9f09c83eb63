import type { Entry } from '../manifest/types.js';
import type { S3Object } from '../sources/s3.js';
import type { ContentKey } from '../content-key.js';
import type { RemoteFile, Source } from '../sources/source.js';
import { withRetry } from '../transfer/retry.js';
import type { SyncContext } from './context.js';

/**
 * What `modelsync lock` and on-demand requests without a sha256 need of a source beyond the
 * Source interface: a RemoteFile for content whose key is not known from the entry.
 */
export interface DescribesS3 {
  describe(e: Entry, signal: AbortSignal): Promise<S3Object>;
  fileFor(obj: S3Object, key: ContentKey): RemoteFile;
}

export interface HasFileFor {
  fileFor(e: Entry, key: ContentKey): RemoteFile;
}

/** The source, checked to have the method asked for (S3Source and HttpsSource do). */
export function capable<T extends object>(source: Source, method: keyof T & string): Source & T {
  if (typeof (source as unknown as Record<string, unknown>)[method] !== 'function') throw new Error(`source has no ${method}()`);
  return source as Source & T;
}

/** The size from a 1-byte range request, when the server says it. */
export async function probeSize(ctx: Pick<SyncContext, 'policy'>, source: Source, file: RemoteFile, signal: AbortSignal): Promise<number | undefined> {
  const res = await withRetry(() => source.open(file, { range: { start: 0, end: 1 }, signal }), ctx.policy, { signal });
  res.body.destroy();
  return res.status === 206 ? res.range?.total : res.length;
}
