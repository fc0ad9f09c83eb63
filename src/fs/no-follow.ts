import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/**
 * Opens and mode changes that never follow a symlink at the file's own name. Folders on the way
 * are confined by held directories (held-dir.ts); these cover the last component, which open(2)
 * and chmod(2) would otherwise follow to wherever a planted link points.
 */
const { O_RDONLY, O_RDWR, O_CREAT, O_TRUNC, O_NOFOLLOW } = constants;

export const READ_NO_FOLLOW = O_RDONLY | O_NOFOLLOW;
/** An existing file, read and written in place ('r+'). */
export const UPDATE_NO_FOLLOW = O_RDWR | O_NOFOLLOW;
/** Created or emptied, read and written ('w+'). */
export const REWRITE_NO_FOLLOW = O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW;

export function openNoFollow(file: string, flags: number, mode?: number): Promise<FileHandle> {
  return open(file, flags, mode);
}

/** chmod of the file itself: ELOOP when the name is a symlink (chmod(2) would change its target). */
export async function chmodNoFollow(file: string, mode: number): Promise<void> {
  const fh = await open(file, READ_NO_FOLLOW);
  try {
    await fh.chmod(mode);
  } finally {
    await fh.close();
  }
}
