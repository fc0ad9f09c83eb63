import { ModelsyncError, errnoCode } from '../errors.js';

/**
 * A write refused for want of room: the file system is full, a quota is used up, or the file
 * would pass a size limit. Retrying cannot help until someone makes room. The one list: the
 * machine-condition table (os-errors.ts) takes its disk-full rows from here.
 */
export const DISK_FULL_ERRNOS: Readonly<Record<string, string>> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large for this process (`ulimit -f`) or file system',
};

export function isDiskFull(e: unknown): boolean {
  const code = errnoCode(e);
  return code !== undefined && Object.hasOwn(DISK_FULL_ERRNOS, code);
}

/** `what` says what was being written: "while writing URI", "while committing URI", "while publishing DEST". */
export function diskFullError(e: unknown, what: string, ctx: { readonly url?: string; readonly dest?: string } = {}): ModelsyncError {
  return new ModelsyncError('E_DISK_FULL', `disk full ${what} (${errnoCode(e) ?? 'write failed'})`, { ...ctx, cause: e });
}
