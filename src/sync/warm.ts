import type { Config } from '../config.js';
import type { Manifest } from '../manifest/types.js';
import { keyName } from '../content-key.js';
import { StateDb } from '../state/db.js';
import { PublishedTable } from '../state/published-table.js';
import { openStore } from '../store/layout.js';
import { presentLocallySync } from './local.js';
import { placeFromCache } from './place.js';
import { writeRefs } from './refs.js';
import type { EntryResult, SyncReport } from './types.js';

/**
 * A warm start's verdict: the whole sync's report, or nothing (the full sync must run). Opening
 * the state DB may have replaced an unreadable one: the full sync must know (it then re-hashes
 * store blobs before trusting them), and only this open saw it.
 */
export interface WarmOutcome {
  readonly report?: SyncReport;
  readonly dbRecreated?: string;
}

/**
 * A warm start's sync: when every entry is in place by stat + the state DB alone (the rule the
 * full sync applies first: local.ts), that is the report, with no network, no model byte read
 * and none of the download stack loaded. Anything else (an entry missing, changed or never
 * synced; a state DB just recreated; a reference record not written) is left to the full sync,
 * which decides every entry again.
 * This module's imports are the warm start's load time: keep them light.
 */
export async function warmSync(config: Config, written: Manifest): Promise<WarmOutcome> {
  const started = performance.now();
  let dbRecreated: string | undefined;
  const db = StateDb.open(config.stateDir, { onRecreated: (why) => (dbRecreated = why), busyTimeoutMs: config.tunables.stateBusyTimeoutMs });
  try {
    if (dbRecreated !== undefined) return { dbRecreated };
    const ctx = { config, db };
    // A civitai entry's derived dest comes from the lock or the state DB, never the network here.
    const placement = placeFromCache(db, written);
    if (placement.failed.length > 0 || placement.manifest.unplaced.length > 0) return {};
    const manifest = placement.manifest;
    const published = new PublishedTable(db, config.modelsDir);
    // Entries dropped from the manifest are the full sync's to unpublish (sync/removed.ts).
    const named = new Set(manifest.entries.map((e) => e.dest));
    const dropped = published.rowsOf(manifest.path).filter((r) => !named.has(r.dest));
    if (dropped.length > 0 && !config.keepRemoved) return {};
    const entries: EntryResult[] = [];
    for (const e of manifest.entries) {
      const p = presentLocallySync(ctx, e, manifest.path);
      // Another manifest's row (or one carried over from an older state DB) is the full sync's to take over.
      if (!p || !published.has(e.dest, manifest.path)) return {};
      // The full sync's shape for a present entry (engine.ts), field for field.
      entries.push({ index: e.index, dest: e.dest, source: e.source.uri, required: e.required, state: 'present', key: p.key, size: p.size, commit: undefined, error: undefined });
    }
    // As after any complete sync: the store's reference record is rewritten (gc judges liveness by its age).
    const store = await openStore(config.storeDir, { modelsDir: config.modelsDir });
    try {
      const keys = entries.flatMap((r) => (r.key ? [keyName(r.key)] : []));
      // A record that cannot be written is the full sync's to warn about (this path has no logger).
      if (!(await writeRefs({ db, store, config }, manifest.path, keys, { merge: false }).then(() => true, () => false))) return {};
    } finally {
      await store.close();
    }
    const removed = dropped.map((r) => ({ dest: r.dest, source: r.source, key: r.key, size: r.size, state: 'kept' as const, reason: '--keep-removed' }));
    return { report: { ok: true, entries, removed, bytesFetched: 0, durationMs: performance.now() - started } };
  } finally {
    db.close();
  }
}
