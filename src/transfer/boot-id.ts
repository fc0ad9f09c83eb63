import { readFile } from 'node:fs/promises';

let memo: Promise<string | undefined> | undefined;

/**
 * This kernel's boot id (Linux), or undefined elsewhere. Bytes a killed process wrote are still in
 * the page cache until the machine reboots, so progress noted under the same boot id is good for a
 * resume even when it was never fdatasync'ed. Containers see the host's id, which is what counts:
 * the page cache is the host's.
 */
export function bootId(): Promise<string | undefined> {
  memo ??= readFile('/proc/sys/kernel/random/boot_id', 'utf8').then(
    (s) => s.trim() || undefined,
    () => undefined,
  );
  return memo;
}
