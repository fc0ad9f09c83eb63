import { ModelsyncError } from '../errors.js';
import type { FileStamp } from '../state/db.js';
import { blobStampOf, sameStamp } from '../store/blobs.js';
import { withReopen } from '../fs/estale.js';
import { quarantineBlob } from '../store/quarantine.js';
import { hashFile } from '../transfer/verify.js';
import type { SyncContext } from './context.js';
import type { SyncBatch } from './sync-batch.js';
import type { BlobJob } from './types.js';

/**
 * The job's blob in the store, if it can be used as it is; its stamp then.
 *
 * A blob this node verified is trusted while its stamp (inode, size, mtime, ctime) is the one it
 * verified; a blob it never saw was verified by the node that committed it (blobs are committed
 * read-only under the hash their bytes were checked against), unless this node's state DB was just
 * recreated. Anything else is hashed again here: a blob whose bytes do not hash to its address is
 * moved to quarantine and fetched again; one that does is remembered with its new stamp.
 *
 * A manifest (or lock) whose size disagrees with a blob proven this way is wrong, not the blob:
 * that entry fails (E_SIZE_MISMATCH) and the blob stays for every models dir that publishes it.
 */
export async function usableBlob(ctx: SyncContext, job: BlobJob, final: string, batch: SyncBatch): Promise<FileStamp | undefined> {
  const stamp = await withReopen(() => blobStampOf(final));
  if (!stamp) return undefined;
  const sizeOk = job.file.size === undefined || stamp.size === job.file.size;
  const known = ctx.db.verifiedStamp(final);
  const provenBefore = known !== undefined && sameStamp(known, stamp) && known.algo === job.key.algo && known.hex === job.key.hex;
  const trusted = known === undefined ? !ctx.dbRecreated : provenBefore;
  // A size that disagrees with a blob nobody here has hashed yet could be the blob's fault: hash it.
  if (!trusted || (!sizeOk && !provenBefore)) {
    const h = await withReopen(() => hashFile(final, job.key.algo));
    if (h.hex !== job.key.hex) {
      const aside = await quarantineBlob(ctx.store, job.key, stamp);
      batch.record(() => ctx.db.forgetVerified(final));
      ctx.log.error({ blob: final, expected: job.key.hex, got: h.hex, quarantine: aside }, 'store blob does not match its address; moved to quarantine, fetching it again');
      return undefined;
    }
    batch.record(() => ctx.db.putVerified(final, stamp, job.key));
  } else if (known === undefined) {
    // Remember what was trusted: a later change to it (an edit through a published link) shows.
    batch.record(() => ctx.db.putVerified(final, stamp, job.key));
  }
  if (!sizeOk) {
    throw new ModelsyncError('E_SIZE_MISMATCH', `${job.file.uri}: expected ${job.file.size} bytes, but its content (${job.key.algo} ${job.key.hex}) is in the store, verified, with ${stamp.size}; the manifest's (or lock's) size is wrong`, { url: job.file.uri });
  }
  return stamp;
}
