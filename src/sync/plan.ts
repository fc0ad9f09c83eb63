import { readdir, statfs } from 'node:fs/promises';
import path from 'node:path';
import { ModelsyncError } from '../errors.js';
import { fmt } from '../fmt.js';
import type { Entry, Manifest } from '../manifest/types.js';
import { isContentKey, keyName, type ContentKey } from '../content-key.js';
import type { RemoteFile } from '../sources/source.js';
import { blobStampOf } from '../store/blobs.js';
import { blobPath } from '../store/layout.js';
import { readJournal } from '../transfer/journal.js';
import type { SyncContext } from './context.js';
import { presentLocally } from './local.js';
import type { BlobJob, SyncEvents } from './types.js';

const ENTRY_LEVEL: ReadonlySet<string> = new Set(['E_NOT_FOUND', 'E_HASH_MISMATCH', 'E_SIZE_MISMATCH', 'E_REMOTE_INVALID']);

export interface Plan {
  readonly present: readonly { entry: Entry; key: ContentKey; size: number }[];
  readonly jobs: readonly BlobJob[];
  readonly failed: readonly { entry: Entry; error: ModelsyncError }[];
  /** Keys of jobs whose blob is already in the store (publish only). */
  readonly inStore: ReadonlySet<string>;
  /** Bytes still to come over the network (partials already on disk subtracted). */
  readonly bytesToFetch: number;
  readonly freeBytes: number;
  /** Bytes other writers on this volume still have to write for blobs we do not need. */
  readonly othersPendingBytes: number;
}

/**
 * Decide what a sync must do: entries already in place (stat + state DB only), then the rest
 * resolved (one Hub lookup per repo), deduplicated by content, and sized against free space.
 */
export async function buildPlan(ctx: SyncContext, manifest: Manifest, entries: readonly Entry[], signal: AbortSignal, events: SyncEvents = {}): Promise<Plan> {
  const present: { entry: Entry; key: ContentKey; size: number }[] = [];
  const todo: Entry[] = [];
  for (const e of entries) {
    const p = await presentLocally(ctx, e, manifest.path);
    if (p) {
      present.push({ entry: e, ...p });
      events.cacheHit?.(e);
      events.entryState?.(e, 'present', { size: p.size });
    } else todo.push(e);
  }
  const failed: { entry: Entry; error: ModelsyncError }[] = [];
  const resolved = new Map<Entry, RemoteFile>();
  const groups = new Map<string, Entry[]>();
  for (const e of todo) {
    const s = e.source;
    const g = s.kind === 'hf' ? `hf:${s.repoType}:${s.repo}@${s.revision}` : `${s.kind}:${e.index}`;
    groups.set(g, [...(groups.get(g) ?? []), e]);
  }
  await Promise.all(
    [...groups.values()].map(async (group) => {
      const first = group[0] as Entry;
      group.forEach((e) => events.entryState?.(e, 'resolving'));
      let rest = group;
      while (rest.length > 0) {
        try {
          const source = await ctx.sourceFor(first.source.kind, manifest);
          const files = await source.resolve(rest, signal);
          rest.forEach((e, i) => resolved.set(e, files[i] as RemoteFile));
          rest = [];
        } catch (err) {
          const me = err instanceof ModelsyncError ? err : new ModelsyncError('E_SYNC_FAILED', String(err), { cause: err });
          // One bad path in a repo (a typo, a hash that disagrees) fails that entry alone; the
          // others are resolved again from what the first call cached. Repo-wide failures (an HTTP
          // answer: auth, gated, missing repo) fail the whole group at once.
          const culprit = rest.find((e) => e.index === me.entry);
          if (culprit && me.status === undefined && rest.length > 1 && ENTRY_LEVEL.has(me.code)) {
            failed.push({ entry: culprit, error: me });
            rest = rest.filter((e) => e !== culprit);
            continue;
          }
          for (const e of rest) failed.push({ entry: e, error: me.forEntry(e.index, e.dest) });
          rest = [];
        }
      }
    }),
  );
  const byKey = new Map<string, { file: RemoteFile; entries: Entry[] }>();
  for (const e of todo) {
    const f = resolved.get(e);
    if (!f) continue;
    const k = keyName(f.key);
    const j = byKey.get(k);
    if (j) j.entries.push(e);
    else byKey.set(k, { file: f, entries: [e] });
  }
  const jobs: BlobJob[] = [...byKey.values()].map((j) => ({ key: j.file.key, file: j.file, entries: j.entries }));
  const inStore = new Set<string>();
  let need = 0;
  const partials = await partialProgress(ctx);
  for (const j of jobs) {
    const k = keyName(j.key);
    // A key that cannot name a blob fails its entries when it is fetched (blobPath refuses it).
    if (isContentKey(j.key) && (await blobStampOf(blobPath(ctx.store, j.key))) !== undefined) {
      inStore.add(k);
      continue;
    }
    need += Math.max(0, (j.file.size ?? j.file.sizeHint ?? 0) - (partials.get(k)?.written ?? 0));
  }
  // Only downloads in progress will still grow: a partial whose lease is gone was left by a dead
  // writer and grows only if someone who needs it resumes it (then it is in their plan).
  const leased = new Set(await readdir(ctx.store.at.leases).catch(() => []));
  let othersPending = 0;
  for (const [k, p] of partials) if (!byKey.has(k) && leased.has(k)) othersPending += Math.max(0, p.size - p.written);
  const fs = await statfs(ctx.store.root);
  return { present, jobs, failed, inStore, bytesToFetch: need, freeBytes: fs.bavail * fs.bsize, othersPendingBytes: othersPending };
}

/** Refuse a plan that cannot fit, before a single byte is downloaded. */
export function checkSpace(plan: Plan): void {
  const free = plan.freeBytes - plan.othersPendingBytes;
  if (plan.bytesToFetch > free) {
    throw new ModelsyncError(
      'E_NO_SPACE',
      `not enough free space: need ${fmt(plan.bytesToFetch)}, have ${fmt(free)} free${plan.othersPendingBytes > 0 ? ` (after ${fmt(plan.othersPendingBytes)} other nodes are still writing)` : ''}`,
    );
  }
}

export { fmt };

/** Bytes already written into partials per blob, from the journals in STORE/tmp. */
async function partialProgress(ctx: SyncContext): Promise<Map<string, { size: number; written: number }>> {
  const out = new Map<string, { size: number; written: number }>();
  let names: string[];
  try {
    names = await readdir(ctx.store.at.tmp);
  } catch {
    return out;
  }
  for (const n of names) {
    if (!n.endsWith('.journal')) continue;
    const j = await readJournal(path.join(ctx.store.at.tmp, n)).catch(() => undefined);
    if (!j) continue;
    const k = n.split('.')[0] ?? '';
    const w = j.written.reduce((a, b) => a + b, 0);
    const prev = out.get(k);
    if (!prev || prev.written < w) out.set(k, { size: j.size, written: w });
  }
  return out;
}
