import { randomBytes } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import { isTempOf } from '../fs/atomic-write.js';
import type { Logger } from '../log.js';
import { KEY_NAME, list, readBlobs, readLeases, readQuarantine, readRecords, readTemps, statOrGone, storeNow, type BlobEntry, type RefsRecord } from './gc-scan.js';
import { inBlobDir, shownPath, type StoreLayout } from './layout.js';
import { entryIn, inDir } from '../fs/held-dir.js';
import type { ContentKey } from '../content-key.js';

/**
 * `modelsync gc`: remove store blobs that no node's manifest references any more, and the debris
 * of dead writers. There is no lock to take: every decision rests on files any node can read.
 *
 * - References: each node records the keys its manifest references in STORE/refs/<node>.json,
 *   adding what it is about to fetch before it fetches it. A record is live while it was
 *   rewritten within `refsMaxAgeMs` (every sync rewrites it); a dead record protects nothing.
 * - Grace: a blob is collected only after it has been unreferenced for `graceMs`. When a gc run
 *   first sees it unreferenced it drops a marker, STORE/gc/unreferenced/<key>; the marker's mtime
 *   (the store's clock) is when the grace started. A run that sees the blob referenced again
 *   removes the marker. The blob's ctime counts too: commit (chmod + rename) and every publish
 *   (a new hard link) set it, so a blob committed or linked within the grace is never collected.
 *   Not atime: relatime/noatime mounts and every read make it meaningless.
 * - In flight: a blob with a lease, or with a partial in STORE/tmp younger than `tmpMaxAgeMs`,
 *   is being downloaded (a partial may be resumed by the next node): never collected.
 * - Debris: partials, journals and temp files untouched for `tmpMaxAgeMs` and not under a live
 *   lease; leases whose heartbeat stopped that long ago; leftovers of broken/released leases;
 *   quarantined blobs (STORE/quarantine) moved aside that long ago.
 * - Safety: with no live record at all, no blob is collected (an empty refs dir is more likely a
 *   new or misconfigured store than a decision to delete everything). Just before deleting, the
 *   records and leases are read again, so a node that started to need a blob meanwhile keeps it.
 */
export interface GcOptions {
  readonly store: StoreLayout;
  readonly graceMs: number;
  readonly refsMaxAgeMs: number;
  readonly tmpMaxAgeMs: number;
  readonly dryRun: boolean;
  /** Milliseconds on the store's clock (test seam); by default probed from the store. */
  readonly now?: number;
  readonly log?: Logger;
}

export interface GcBlob {
  readonly key: string;
  readonly size: number;
}

export interface GcReport {
  readonly dryRun: boolean;
  readonly records: readonly { node: string; host: string | undefined; manifest: string | undefined; modelsDir: string | undefined; keys: number; ageMs: number; live: boolean }[];
  readonly referenced: number;
  /** Removed (or, on a dry run, would be). `stillLinked`: a published hard link keeps its bytes on disk. */
  readonly removed: readonly (GcBlob & { stillLinked: boolean; unreferencedMs: number })[];
  readonly pending: readonly (GcBlob & { remainingMs: number })[];
  readonly inFlight: readonly (GcBlob & { why: 'lease' | 'partial' })[];
  readonly temps: readonly { path: string; size: number; ageMs: number }[];
  readonly leases: readonly { path: string; ageMs: number }[];
  /** Bytes that left the disk (blobs with no other link, plus temp files). */
  readonly freedBytes: number;
  /** Why no blob was collected at all, when that was a safety stop. */
  readonly refused: string | undefined;
}

export async function collectGarbage(opts: GcOptions): Promise<GcReport> {
  const { store } = opts;
  // Read through its path; every write in it goes through the folder held (inMarkers).
  const markers = path.join(store.at.root, 'gc', 'unreferenced');
  // Probed in tmp/, the one folder that is scratch space anyway (a dry run leaves no trace).
  const now = opts.now ?? (await storeNow(store.at.tmp));
  const act = !opts.dryRun;

  const { records, temps: recordTemps } = await readRecords(store);
  const live = records.filter((r) => isLive(r, now, opts.refsMaxAgeMs));
  const referenced = new Set(live.flatMap((r) => r.keys));

  // Leases first: one whose heartbeat stopped long ago protects neither its partials nor its blob.
  const { leases, leftovers } = await readLeases(store);
  const leasesOut: { path: string; ageMs: number }[] = [];
  const leased = new Set<string>();
  for (const l of leases) {
    const age = now - l.mtimeMs;
    if (age < opts.tmpMaxAgeMs) {
      leased.add(l.key);
      continue;
    }
    leasesOut.push({ path: rel(store, l.path), ageMs: age });
    if (act) await removeLease(l.path);
  }
  if (act) for (const p of leftovers) await rm(p, { recursive: true, force: true });

  const tempsOut: { path: string; size: number; ageMs: number }[] = [];
  const partial = new Set<string>();
  for (const t of await readTemps(store)) {
    const age = now - t.mtimeMs;
    if (leased.has(t.key) || age < opts.tmpMaxAgeMs) {
      partial.add(t.key);
      continue;
    }
    tempsOut.push({ path: rel(store, t.path), size: t.size, ageMs: age });
    if (act) await rm(t.path, { force: true });
  }
  for (const t of [...recordTemps, ...(await rootTemps(store))]) {
    const age = now - t.mtimeMs;
    if (age < opts.tmpMaxAgeMs) continue;
    tempsOut.push({ path: rel(store, t.path), size: t.size, ageMs: age });
    if (act) await rm(t.path, { force: true });
  }
  // Listed and removed in the folder held: names read through a swapped symlink are never removed.
  await inQuarantine(store, async (at) => {
    for (const t of await readQuarantine(at)) {
      const age = now - t.mtimeMs;
      if (age < opts.tmpMaxAgeMs) continue;
      tempsOut.push({ path: path.join('quarantine', path.basename(t.path)), size: t.size, ageMs: age });
      if (act) await rm(t.path, { force: true });
    }
  });

  const blobs = await readBlobs(store);
  const marked = new Set(await list(markers));
  const refused = live.length === 0 && blobs.length > 0 ? `no live reference record in ${rel(store, store.refs)}/ (none written within the last ${fmtAge(opts.refsMaxAgeMs)}): no blob is collected until some node has synced` : undefined;
  const pending: (GcBlob & { remainingMs: number })[] = [];
  const inFlight: (GcBlob & { why: 'lease' | 'partial' })[] = [];
  let candidates: (BlobEntry & { unreferencedMs: number })[] = [];
  for (const b of blobs) {
    const marker = path.join(markers, b.key);
    if (referenced.has(b.key)) {
      if (act && marked.has(b.key)) await inMarkers(store, false, (at) => rm(entryIn(at, b.key), { force: true }));
      continue;
    }
    if (leased.has(b.key) || partial.has(b.key)) {
      inFlight.push({ key: b.key, size: b.size, why: leased.has(b.key) ? 'lease' : 'partial' });
      continue;
    }
    if (refused !== undefined) continue;
    let since = marked.has(b.key) ? (await statOrGone(marker))?.mtimeMs : undefined;
    if (since === undefined) {
      since = now;
      if (act) await dropMarker(store, b.key);
    }
    since = Math.max(since, b.ctimeMs);
    const unreferencedMs = now - since;
    if (unreferencedMs >= opts.graceMs) candidates.push({ ...b, unreferencedMs });
    else pending.push({ key: b.key, size: b.size, remainingMs: opts.graceMs - unreferencedMs });
  }

  if (act && candidates.length > 0) {
    // A second look: a node may have started to need one of them since we read the records.
    const again = (await readRecords(store)).records.filter((r) => isLive(r, now, opts.refsMaxAgeMs));
    const wanted = new Set(again.flatMap((r) => r.keys));
    const leasedNow = new Set((await readLeases(store)).leases.map((l) => l.key));
    candidates = candidates.filter((c) => !wanted.has(c.key) && !leasedNow.has(c.key));
  }
  const removed: GcReport['removed'][number][] = [];
  let freed = tempsOut.reduce((a, t) => a + t.size, 0);
  for (const c of candidates) {
    if (act) {
      try {
        await removeBlob(store, c.key);
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT') throw e;
        continue;
      }
      await inMarkers(store, false, (at) => rm(entryIn(at, c.key), { force: true }));
      opts.log?.info({ blob: c.key, size: c.size }, 'gc removed blob');
    }
    const stillLinked = c.nlink > 1;
    if (!stillLinked) freed += c.size;
    removed.push({ key: c.key, size: c.size, stillLinked, unreferencedMs: c.unreferencedMs });
  }
  if (act) await dropOrphanMarkers(store, marked, new Set(blobs.map((b) => b.key)));

  return {
    dryRun: opts.dryRun,
    records: records.map((r) => ({ node: r.node, host: r.host, manifest: r.manifest, modelsDir: r.modelsDir, keys: r.keys.length, ageMs: now - r.mtimeMs, live: live.includes(r) })),
    referenced: blobs.filter((b) => referenced.has(b.key)).length,
    removed,
    pending,
    inFlight,
    temps: tempsOut,
    leases: leasesOut,
    freedBytes: freed,
    refused,
  };
}

/**
 * Live if either the store's clock (mtime) or the writer's (updatedAt) says it was written
 * recently: a writer whose clock runs ahead keeps its record alive longer, which only keeps blobs.
 */
export function isLive(r: RefsRecord, now: number, maxAgeMs: number): boolean {
  return now - r.mtimeMs < maxAgeMs || (r.updatedAt !== undefined && now - r.updatedAt < maxAgeMs);
}

/** Rename first, like a lease break: a holder that comes back finds its lease gone, not half-deleted. */
async function removeLease(p: string): Promise<void> {
  const away = `${p}.stale-${randomBytes(6).toString('hex')}`;
  try {
    await rename(p, away);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return;
    throw e;
  }
  await rm(away, { recursive: true, force: true });
}

async function dropMarker(store: StoreLayout, key: string): Promise<void> {
  await inMarkers(store, true, async (at) => {
    try {
      await writeFile(entryIn(at, key), '', { flag: 'wx' });
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw e;
    }
  });
}

async function inQuarantine(store: StoreLayout, fn: (at: string) => Promise<void>): Promise<void> {
  try {
    await inDir(store.at.root, ['quarantine'], fn, { shown: store.root });
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
}

/** STORE/gc/unreferenced held for a write (made when asked); no folder, nothing to do, when not. */
async function inMarkers(store: StoreLayout, create: boolean, fn: (at: string) => Promise<unknown>): Promise<void> {
  try {
    await inDir(store.at.root, ['gc', 'unreferenced'], fn, { create, shown: store.root });
  } catch (e) {
    if (create || errnoCode(e) !== 'ENOENT') throw e;
  }
}

/** A blob's name goes, in its folder held (a shard swapped for a symlink gets no unlink). */
async function removeBlob(store: StoreLayout, name: string): Promise<void> {
  const [algo, hex] = name.split('-') as [ContentKey['algo'], string];
  await inBlobDir(store, { algo, hex }, (at) => rm(entryIn(at, hex)));
}

async function dropOrphanMarkers(store: StoreLayout, marked: ReadonlySet<string>, blobs: ReadonlySet<string>): Promise<void> {
  const orphans = [...marked].filter((name) => KEY_NAME.test(name) && !blobs.has(name));
  if (orphans.length > 0) await inMarkers(store, false, (at) => Promise.all(orphans.map((name) => rm(entryIn(at, name), { force: true }))));
}

/** Temp files of layout.json writers (writeJsonAtomic) killed before their rename. */
async function rootTemps(store: StoreLayout): Promise<{ path: string; mtimeMs: number; size: number }[]> {
  const out: { path: string; mtimeMs: number; size: number }[] = [];
  for (const name of await list(store.at.root)) {
    if (!isTempOf(name, 'layout.json')) continue;
    const st = await statOrGone(path.join(store.at.root, name));
    if (st) out.push(st);
  }
  return out;
}

function rel(store: StoreLayout, p: string): string {
  return path.relative(store.root, shownPath(store, p));
}

export function fmtAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.round(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.round(h / 24)}d`;
}
