/**
 * The invariant of hostile-world.md, checked from the outside: every file at a final path (a
 * store blob or a published dest) is absent or complete and verified. Blobs are re-hashed and
 * compared with their own address; published files with the sha256 the test expects.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

export interface FinalPathReport {
  /** "path: why" for every final path holding wrong or partial bytes. */
  readonly corrupt: string[];
  readonly blobs: number;
  readonly published: number;
  /** Files in the models dir (outside the store) that no test expects: leftovers, not final paths. */
  readonly strays: string[];
}

async function walk(dir: string, skip: (p: string) => boolean = () => false): Promise<string[]> {
  let names;
  try {
    names = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const d of names) {
    const p = path.join(dir, d.name);
    if (skip(p)) continue;
    if (d.isDirectory()) out.push(...(await walk(p, skip)));
    else out.push(p);
  }
  return out;
}

function hashAs(algo: string, bytes: Buffer): string {
  if (algo === 'gitsha1') return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * `expected` maps each dest (relative to the models dir) to the sha256 it must have when present.
 * The store is `models/.modelsync-store` unless given.
 */
export async function checkFinalPaths(modelsDir: string, expected: Readonly<Record<string, string>>, storeDir = path.join(modelsDir, '.modelsync-store')): Promise<FinalPathReport> {
  const corrupt: string[] = [];
  const strays: string[] = [];
  const blobsDir = path.join(storeDir, 'blobs');
  const blobs = await walk(blobsDir);
  for (const b of blobs) {
    const [algo, , hex] = path.relative(blobsDir, b).split(path.sep);
    const bytes = await readFile(b);
    if (algo === undefined || hex === undefined || hashAs(algo, bytes) !== hex) corrupt.push(`${b}: content does not hash to its address`);
    const st = await lstat(b);
    if ((st.mode & 0o222) !== 0) corrupt.push(`${b}: committed blob is writable`);
  }
  let published = 0;
  const seen = new Set<string>();
  for (const [dest, sha] of Object.entries(expected)) {
    const p = path.join(modelsDir, dest);
    seen.add(p);
    let bytes: Buffer;
    try {
      bytes = await readFile(p);
    } catch {
      continue;
    }
    published++;
    if (hashAs('sha256', bytes) !== sha) corrupt.push(`${p}: ${bytes.length} bytes that do not hash to ${sha}`);
  }
  for (const f of await walk(modelsDir, (p) => p === storeDir)) if (!seen.has(f)) strays.push(f);
  return { corrupt, blobs: blobs.length, published, strays };
}
