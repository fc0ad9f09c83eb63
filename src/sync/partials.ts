import { readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { readJournal } from '../transfer/journal.js';
import type { StoreLayout } from '../store/layout.js';

export interface PartPaths {
  readonly part: string;
  readonly journal: string;
}

export function partPaths(store: StoreLayout, keyName: string, token: string): PartPaths {
  const base = path.join(store.tmp, `${keyName}.${token}`);
  return { part: `${base}.part`, journal: `${base}.journal` };
}

/**
 * Take over the best earlier partial of this blob (ours from before a crash, or a dead peer's),
 * by renaming it to our own name. Called only while holding the blob's lease. Partials of another
 * version of the source are useless and removed.
 */
export async function adoptPartial(store: StoreLayout, keyName: string, token: string, version: string): Promise<PartPaths & { adopted: boolean }> {
  const mine = partPaths(store, keyName, token);
  let names: string[];
  try {
    names = await readdir(store.tmp);
  } catch {
    return { ...mine, adopted: false };
  }
  let best: { paths: PartPaths; bytes: number } | undefined;
  for (const n of names) {
    if (!n.startsWith(`${keyName}.`) || !n.endsWith('.journal')) continue;
    const theirs = { journal: path.join(store.tmp, n), part: path.join(store.tmp, n.replace(/\.journal$/, '.part')) };
    if (theirs.part === mine.part) continue;
    const j = await readJournal(theirs.journal);
    if (!j || j.version !== version) {
      await Promise.all([rm(theirs.part, { force: true }), rm(theirs.journal, { force: true })]);
      continue;
    }
    const bytes = j.written.reduce((a, b) => a + b, 0);
    if (!best || bytes > best.bytes) best = { paths: theirs, bytes };
  }
  if (!best) return { ...mine, adopted: false };
  try {
    await rename(best.paths.part, mine.part);
    await rename(best.paths.journal, mine.journal);
    return { ...mine, adopted: true };
  } catch {
    return { ...mine, adopted: false };
  }
}

export async function removePart(p: PartPaths): Promise<void> {
  await Promise.all([rm(p.part, { force: true }), rm(p.journal, { force: true })]);
}
