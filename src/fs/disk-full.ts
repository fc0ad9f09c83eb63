import { ModelsyncError, errnoCode } from '../errors.js';

/**
 * A write refused for want of room: the file system is full (ENOSPC), a quota is used up
 * (EDQUOT), or the file would pass a size limit (EFBIG: RLIMIT_FSIZE, a quota's file limit).
 * Retrying cannot help until someone makes room.
 */
export function isDiskFull(e: unknown): boolean {
  const code = errnoCode(e);
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG';
}

/** `what` says what was being written: "while writing URI", "committing URI", "publishing DEST". */
export function diskFullError(e: unknown, what: string, ctx: { readonly url?: string; readonly dest?: string } = {}): ModelsyncError {
  return new ModelsyncError('E_DISK_FULL', `disk full ${what} (${errnoCode(e) ?? 'write failed'})`, { ...ctx, cause: e });
}
