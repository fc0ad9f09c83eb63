import { randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ModelsyncError, errnoCode } from '../errors.js';
import { withReopen } from '../fs/estale.js';
import type { StoreLayout } from './layout.js';
import { isLeaseLeftover } from './lease.js';

/**
 * What gc reads from a shared store, each item stamped with an mtime from the store's own clock
 * (on NFS the server sets it), so that nodes with skewed wall clocks still agree on ages.
 */

import { KEY_NAME } from '../content-key.js';

export { KEY_NAME };

export interface RefsRecord {
  readonly file: string;
  readonly node: string;
  readonly host: string | undefined;
  readonly manifest: string | undefined;
  /** The install (models dir) the record speaks for; absent in records written before it was kept. */
  readonly modelsDir: string | undefined;
  /** The writer's wall clock. */
  readonly updatedAt: number | undefined;
  /** The store's clock. */
  readonly mtimeMs: number;
  readonly keys: readonly string[];
}

export interface Dated {
  readonly path: string;
  readonly mtimeMs: number;
  readonly size: number;
}

/** The store's clock now: the mtime of a file we just wrote there. Falls back to ours. */
export async function storeNow(dir: string): Promise<number> {
  const probe = path.join(dir, `.clock-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(probe, '', { flag: 'wx' });
    return (await stat(probe)).mtimeMs;
  } catch {
    return Date.now();
  } finally {
    await rm(probe, { force: true }).catch(() => undefined);
  }
}

export async function list(dir: string): Promise<string[]> {
  try {
    return await withReopen(() => readdir(dir));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return [];
    throw e;
  }
}

/** stat, or undefined when it is gone (another node removed it meanwhile). */
export async function statOrGone(p: string): Promise<Dated | undefined> {
  try {
    const s = await withReopen(() => stat(p));
    return { path: p, mtimeMs: s.mtimeMs, size: s.size };
  } catch (e) {
    // ENOTDIR: `<lease>/owner` of a claim, which is a file at the lease's path (see claim.ts).
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw e;
  }
}

/**
 * Every node's reference record. An unreadable record stops gc: it is some node's statement of
 * what it needs, and guessing "nothing" could delete its models.
 */
export async function readRecords(store: StoreLayout): Promise<{ records: RefsRecord[]; temps: Dated[] }> {
  const records: RefsRecord[] = [];
  const temps: Dated[] = [];
  for (const name of await list(store.at.refs)) {
    const file = path.join(store.at.refs, name);
    const st = await statOrGone(file);
    if (!st) continue;
    // Not a record: a writer's temp (writeJsonAtomic: `<node>.json.<pid>.<random>.tmp`).
    if (!name.endsWith('.json')) {
      temps.push(st);
      continue;
    }
    let raw: string;
    try {
      raw = await withReopen(() => readFile(file, 'utf8'));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') continue;
      throw e;
    }
    records.push(parseRecord(file, raw, st.mtimeMs));
  }
  return { records, temps };
}

function parseRecord(file: string, raw: string, mtimeMs: number): RefsRecord {
  let j: { node?: unknown; host?: unknown; manifest?: unknown; modelsDir?: unknown; updatedAt?: unknown; keys?: unknown };
  try {
    j = JSON.parse(raw) as typeof j;
  } catch (e) {
    throw unreadable(file, e);
  }
  if (!Array.isArray(j.keys) || !j.keys.every((k): k is string => typeof k === 'string')) throw unreadable(file, undefined);
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  return {
    file,
    node: str(j.node) ?? path.basename(file, '.json'),
    host: str(j.host),
    manifest: str(j.manifest),
    modelsDir: str(j.modelsDir),
    updatedAt: typeof j.updatedAt === 'number' ? j.updatedAt : undefined,
    mtimeMs,
    keys: j.keys,
  };
}

function unreadable(file: string, cause: unknown): ModelsyncError {
  return new ModelsyncError('E_CORRUPT', `reference record ${file} is unreadable; gc will not guess what that node needs (remove the file if its node is gone for good)`, { cause });
}

export interface LeaseEntry {
  readonly path: string;
  readonly key: string;
  /** Last heartbeat (owner file), or creation when it never got an owner. */
  readonly mtimeMs: number;
}

/** Leases by key, and leftovers of breaks and releases (garbage by name, whatever their age). */
export async function readLeases(store: StoreLayout): Promise<{ leases: LeaseEntry[]; leftovers: string[]; other: string[] }> {
  const leases: LeaseEntry[] = [];
  const leftovers: string[] = [];
  const other: string[] = [];
  for (const name of await list(store.at.leases)) {
    const p = path.join(store.at.leases, name);
    if (isLeaseLeftover(name)) {
      leftovers.push(p);
      continue;
    }
    if (!KEY_NAME.test(name)) {
      other.push(p);
      continue;
    }
    const owner = (await statOrGone(path.join(p, 'owner'))) ?? (await statOrGone(p));
    if (owner) leases.push({ path: p, key: name, mtimeMs: owner.mtimeMs });
  }
  return { leases, leftovers, other };
}

/** Partials, journals and their temp files in STORE/tmp, with the key each belongs to. */
export async function readTemps(store: StoreLayout): Promise<(Dated & { key: string })[]> {
  const out: (Dated & { key: string })[] = [];
  for (const name of await list(store.at.tmp)) {
    const st = await statOrGone(path.join(store.at.tmp, name));
    if (st) out.push({ ...st, key: name.split('.')[0] ?? '' });
  }
  return out;
}

export interface BlobEntry {
  readonly key: string;
  readonly path: string;
  readonly size: number;
  /** The last commit or publish (link) of this inode, on the store's clock. */
  readonly ctimeMs: number;
  readonly nlink: number;
}

/** Every blob under STORE/blobs/<algo>/<xx>/<hex>; anything else there is left alone. */
export async function readBlobs(store: StoreLayout): Promise<BlobEntry[]> {
  const out: BlobEntry[] = [];
  // A folder on the way that is a symlink (planted) is not the store's: its names are not blobs.
  const realDir = async (p: string): Promise<boolean> => (await lstat(p).catch(() => undefined))?.isDirectory() === true;
  for (const algo of await list(store.at.blobs)) {
    if (!(await realDir(path.join(store.at.blobs, algo)))) continue;
    for (const shard of await list(path.join(store.at.blobs, algo))) {
      if (!(await realDir(path.join(store.at.blobs, algo, shard)))) continue;
      for (const hex of await list(path.join(store.at.blobs, algo, shard))) {
        const key = `${algo}-${hex}`;
        if (!KEY_NAME.test(key) || hex.slice(0, 2) !== shard) continue;
        const p = path.join(store.at.blobs, algo, shard, hex);
        try {
          const s = await withReopen(() => stat(p));
          if (s.isFile()) out.push({ key, path: p, size: s.size, ctimeMs: s.ctimeMs, nlink: s.nlink });
        } catch (e) {
          if (errnoCode(e) !== 'ENOENT') throw e;
        }
      }
    }
  }
  return out;
}

/**
 * Blobs moved to STORE/quarantine (the folder `dir`, held), dated by their ctime: the move set it
 * (on the store's clock), while the mtime is still the old commit's. Evidence of a corruption,
 * kept for gc's temp age. A name still hard-linked from a dest frees nothing yet.
 */
export async function readQuarantine(dir: string): Promise<Dated[]> {
  const out: Dated[] = [];
  for (const name of await list(dir)) {
    const p = path.join(dir, name);
    try {
      const s = await withReopen(() => lstat(p));
      if (s.isFile()) out.push({ path: p, mtimeMs: s.ctimeMs, size: s.nlink > 1 ? 0 : s.size });
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
  return out;
}
