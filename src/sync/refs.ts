import { hostname } from 'node:os';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import { writeJsonAtomic } from '../fs/atomic-write.js';
import { withReopen } from '../fs/estale.js';
import { OnDemandTable } from '../state/on-demand-table.js';
import { PublishedTable } from '../state/published-table.js';
import type { SyncContext } from './context.js';

/**
 * Record, in the shared store, which blobs this node's manifest references. Nodes sharing a
 * volume may use different manifests; gc only collects what no live record references.
 * The record is keyed by this install's id (one per models dir and store, kept in the local state
 * DB, stable across restarts: StateDb.identity).
 *
 * A record only shrinks after a complete, successful sync of the whole manifest: a sync that
 * could not resolve an entry (Hub down, offline) does not know that entry's key, and dropping
 * it would let gc collect a blob the manifest still wants. Anything less merges: the keys a sync
 * is about to fetch are added before the first byte moves, so a gc running meanwhile sees them.
 *
 * The on-demand layer's keys (state DB, on_demand table) are in every record written, whatever
 * the caller passes: a full manifest sync's rewrite must not drop them. They are listed under
 * `keys` too, so a gc that knows nothing of the layer keeps them all the same; `onDemand` says
 * which they are. So are the keys of every dest published into this models dir by any manifest
 * (state DB, `published`): two manifests syncing into one models dir are one install with one
 * record, and the files of the one not syncing now are still there; a dest the manifest dropped
 * is in it until it is unpublished (or for good with --keep-removed). `drop`: keys the layer let go of (an eviction), removed from a merged record.
 * Writes of one record are serialised within this process (a sync and on-demand jobs write it
 * side by side), each computed from the state DB when its turn comes.
 */
export function writeRefs(ctx: Pick<SyncContext, 'db' | 'store' | 'config'>, manifestPath: string, keys: readonly string[], opts: { merge?: boolean; drop?: readonly string[] } = {}): Promise<void> {
  const node = ctx.db.identity(ctx.config.modelsDir, ctx.store.root);
  const file = path.join(ctx.store.at.refs, `${node}.json`);
  const turn = (writing.get(file) ?? Promise.resolve()).then(() => writeRecord(ctx, file, node, manifestPath, keys, opts));
  const settled = turn.catch(() => undefined);
  writing.set(file, settled);
  void settled.then(() => {
    if (writing.get(file) === settled) writing.delete(file);
  });
  return turn;
}

/** The last write queued per record file in this process. */
const writing = new Map<string, Promise<void>>();

async function writeRecord(ctx: Pick<SyncContext, 'db' | 'store' | 'config'>, file: string, node: string, manifestPath: string, keys: readonly string[], opts: { merge?: boolean; drop?: readonly string[] }): Promise<void> {
  const modelsDir = ctx.config.modelsDir;
  const onDemand = new OnDemandTable(ctx.db, modelsDir).keys().sort();
  const published = new PublishedTable(ctx.db, modelsDir).keys();
  const drop = new Set(opts.drop ?? []);
  const previous = opts.merge ? (await readKeys(file)).filter((k) => !drop.has(k)) : [];
  const record = { node, host: hostname(), manifest: manifestPath, modelsDir, updatedAt: Date.now(), keys: [...new Set([...previous, ...keys, ...published, ...onDemand])].sort(), onDemand };
  await writeJsonAtomic(file, record);
}

async function readKeys(file: string): Promise<string[]> {
  let raw: string;
  try {
    raw = await withReopen(() => readFile(file, 'utf8'));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return [];
    throw e;
  }
  try {
    const keys = (JSON.parse(raw) as { keys?: unknown }).keys;
    return Array.isArray(keys) ? keys.filter((k): k is string => typeof k === 'string') : [];
  } catch {
    return [];
  }
}
