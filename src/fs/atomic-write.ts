import { rename, rm, writeFile } from 'node:fs/promises';

/**
 * Replace a small file whole: readers see the old content or the new, never half of either.
 * The temp file sits beside the target (same file system, so rename is atomic) under a name
 * unique to this writer: nodes sharing a volume may replace one file at once (layout.json), and
 * a shared temp name would let one node rename the other's half-written bytes into place. A
 * failed write removes its temp; a killed writer leaves one, which gc removes by isTempOf.
 */
export async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = tempPathFor(file);
  try {
    // O_EXCL: never through a symlink planted at the temp's name, never into someone else's file.
    await writeFile(tmp, data, { flag: 'wx' });
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/** writeFileAtomic of `value` as JSON, with a trailing newline; `space` as JSON.stringify's. */
export function writeJsonAtomic(file: string, value: unknown, space?: number): Promise<void> {
  return writeFileAtomic(file, `${JSON.stringify(value, null, space)}\n`);
}

/**
 * `FILE.<pid>.<random>.tmp`. pid + Math.random, not node:crypto: the name only has to differ
 * between writers, and the warm start (which writes refs) would load crypto for nothing else.
 */
export function tempPathFor(file: string): string {
  return `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
}

/**
 * Whether a name in a folder is a temp file of `base` (a file name in the same folder): this
 * scheme's, or the `base.<suffix>` names of earlier versions, which gc must still clear.
 */
export function isTempOf(name: string, base: string): boolean {
  return name.length > base.length + 1 && name.startsWith(`${base}.`);
}
