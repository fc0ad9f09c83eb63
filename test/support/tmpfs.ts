/**
 * A real small file system for disk-full tests: a size-limited tmpfs, when this machine lets us
 * mount one (root in a sandbox that allows mount(2)). Callers fall back to RLIMIT_FSIZE when not.
 */
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type MountResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

function why(e: unknown): string {
  const err = e as { stderr?: string; message?: string };
  return (err.stderr ?? '').trim() || (err.message ?? String(e));
}

export async function mountTmpfs(dir: string, bytes: number): Promise<MountResult> {
  await mkdir(dir, { recursive: true });
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'tmpfs', dir]);
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: why(e) };
  }
}

/** Grow (or shrink) a mounted tmpfs in place: "free some space" without touching its files. */
export async function resizeTmpfs(dir: string, bytes: number): Promise<void> {
  await run('mount', ['-o', `remount,size=${bytes}`, dir]);
}

/** Lazy unmount: succeeds even if a killed child still holds a file open there. */
export async function unmount(dir: string): Promise<void> {
  await run('umount', ['-l', dir]).catch(() => undefined);
}
