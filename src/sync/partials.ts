import { lstat, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import { isTempOf } from '../fs/atomic-write.js';
import { withReopen } from '../fs/estale.js';
import { chmodNoFollow } from '../fs/no-follow.js';
import { readJournal } from '../transfer/journal.js';
import { checkKeyName, type StoreLayout } from '../store/layout.js';

export interface PartPaths {
  readonly part: string;
  readonly journal: string;
}

export function partPaths(store: StoreLayout, keyName: string, token: string): PartPaths {
  const base = path.join(store.at.tmp, `${checkKeyName(keyName)}.${token}`);
  return { part: `${base}.part`, journal: `${base}.journal` };
}

/**
 * Take over the best earlier partial of this blob (ours from before a crash, or a dead peer's),
 * by renaming it to our own name. Called only while holding the blob's lease, so every other
 * writer of this blob is dead or fenced off; what they left is ours to adopt or clear: partials
 * of another version of the source, journals whose partial is gone, partials with no journal
 * (nothing in them can be trusted). The adopted bytes are not trusted either: the downloader
 * re-hashes them from disk, and a mismatch discards them.
 */
export async function adoptPartial(store: StoreLayout, keyName: string, token: string, version: string): Promise<PartPaths & { adopted: boolean }> {
  const mine = partPaths(store, keyName, token);
  let names: string[];
  try {
    names = await withReopen(() => readdir(store.at.tmp));
  } catch {
    return { ...mine, adopted: false };
  }
  const ours = names.filter((n) => n.startsWith(`${keyName}.`));
  let best: { paths: PartPaths; bytes: number } | undefined;
  for (const n of ours) {
    if (!n.endsWith('.journal')) continue;
    const theirs = { journal: path.join(store.at.tmp, n), part: path.join(store.at.tmp, n.replace(/\.journal$/, '.part')) };
    if (theirs.part === mine.part) continue;
    const j = await readJournal(theirs.journal);
    const partSize = await sizeOf(theirs.part);
    if (!j || j.version !== version || partSize !== j.size) {
      await removePart(theirs);
      continue;
    }
    const bytes = j.written.reduce((a, b) => a + b, 0);
    if (!best || bytes > best.bytes) best = { paths: theirs, bytes };
  }
  // A partial whose journal never got written (its writer died in its first second).
  for (const n of ours) {
    if (!n.endsWith('.part')) continue;
    const part = path.join(store.at.tmp, n);
    if (part === mine.part || ours.includes(`${n.slice(0, -'.part'.length)}.journal`)) continue;
    await rm(part, { force: true });
  }
  // A journal's temp, left by a writer killed between writing it and renaming it into place.
  const myJournal = path.basename(mine.journal);
  for (const n of ours) {
    if (n.endsWith('.tmp') && /\.journal\./.test(n) && !isTempOf(n, myJournal)) await rm(path.join(store.at.tmp, n), { force: true });
  }
  if (!best) return { ...mine, adopted: false };
  try {
    await rename(best.paths.part, mine.part);
    await rename(best.paths.journal, mine.journal);
    // A writer that died between chmod and rename of its commit left it read-only.
    await chmodNoFollow(mine.part, 0o644);
    return { ...mine, adopted: true };
  } catch {
    return { ...mine, adopted: false };
  }
}

/** The size of a partial that is a regular file; a symlink (planted where a peer's partial would be) is none. */
async function sizeOf(file: string): Promise<number | undefined> {
  try {
    const st = await withReopen(() => lstat(file));
    return st.isFile() ? st.size : undefined;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

export async function removePart(p: PartPaths): Promise<void> {
  await Promise.all([rm(p.part, { force: true }), rm(p.journal, { force: true })]);
}
