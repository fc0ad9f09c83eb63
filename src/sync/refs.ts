import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { SyncContext } from './context.js';

/**
 * Record, in the shared store, which blobs this node's manifest references. Nodes sharing a
 * volume may use different manifests; gc only collects what no live record references.
 * The record is keyed by a node id kept in the local state DB, stable across restarts.
 */
export async function writeRefs(ctx: SyncContext, manifestPath: string, keys: readonly string[]): Promise<void> {
  const node = ctx.db.nodeId();
  const file = path.join(ctx.store.refs, `${node}.json`);
  const tmp = `${file}.${randomBytes(4).toString('hex')}`;
  const record = { node, host: hostname(), manifest: manifestPath, updatedAt: Date.now(), keys: [...new Set(keys)].sort() };
  await writeFile(tmp, `${JSON.stringify(record)}\n`);
  await rename(tmp, file);
}
