import { hostname } from 'node:os';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import { writeJsonAtomic } from '../fs/atomic-write.js';
import { withReopen } from '../fs/estale.js';
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
 */
export async function writeRefs(ctx: Pick<SyncContext, 'db' | 'store' | 'config'>, manifestPath: string, keys: readonly string[], opts: { merge?: boolean } = {}): Promise<void> {
  const modelsDir = ctx.config.modelsDir;
  const node = ctx.db.identity(modelsDir, ctx.store.root);
  const file = path.join(ctx.store.refs, `${node}.json`);
  const previous = opts.merge ? await readKeys(file) : [];
  const record = { node, host: hostname(), manifest: manifestPath, modelsDir, updatedAt: Date.now(), keys: [...new Set([...previous, ...keys])].sort() };
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
