import path from 'node:path';
import { keyName, type ContentKey } from '../content-key.js';
import { errnoCode } from '../errors.js';
import type { Manifest } from '../manifest/types.js';
import { OnDemandTable } from '../state/on-demand-table.js';
import { PublishedTable, type PublishedRow } from '../state/published-table.js';
import { isLive } from '../store/gc.js';
import { readRecords, type RefsRecord } from '../store/gc-scan.js';
import { blobPath } from '../store/layout.js';
import { ownerOf, unpublish } from '../store/unpublish.js';
import type { SyncContext } from './context.js';

/**
 * A dest this manifest published that it no longer names. 'unpublished': modelsync's file was
 * removed (with `dryRun`: would be). 'user-file': the file there is not the one modelsync placed
 * (replaced or changed since): left alone. 'kept': left in place, `reason` says why (another
 * manifest or install using this models dir names it, the on-demand layer holds it,
 * --keep-removed).
 */
export interface Removal {
  readonly dest: string;
  readonly source: string;
  readonly key: ContentKey;
  readonly size: number;
  readonly state: 'unpublished' | 'user-file' | 'kept';
  readonly reason?: string | undefined;
}

export interface RemovalOptions {
  /** plan and status: decide, change nothing. */
  readonly dryRun?: boolean;
  /** Sources of entries whose dest is not known yet (a civitai entry that could not be placed). */
  readonly unplacedSources?: ReadonlySet<string>;
}

/**
 * The models dir as the desired state: what `manifest` published into it before and names no
 * more is unpublished, and only that. Called only with a manifest that loaded (a failed load
 * never gets here), after a sync of all its entries: a dest that moved is published at its new
 * place before the old one goes. Files are judged one by one (ownerOf); a user's own file stays
 * and is reported once, then forgotten like any other file modelsync does not know. A dest
 * another manifest syncing into this models dir has a row for, or whose content a live reference
 * record of another install with this models dir names (nodes sharing one models dir), stays:
 * whichever drops it last unpublishes it. An unreadable record keeps every file (gc refuses to
 * guess, and so does this). `config.keepRemoved`: nothing is touched, every row stays.
 */
export async function settleRemoved(ctx: SyncContext, manifest: Manifest, opts: RemovalOptions = {}): Promise<Removal[]> {
  const modelsDir = ctx.config.modelsDir;
  const table = new PublishedTable(ctx.db, modelsDir);
  const named = new Set(manifest.entries.map((e) => e.dest));
  // A civitai entry not placed yet may be any of the rows of its source: they all stay.
  const unplaced = new Set([...(opts.unplacedSources ?? []), ...manifest.unplaced.map((u) => u.source.uri)]);
  // Rows read back validated (PublishedTable): a dest that is not FOLDER/FILE of plain names is
  // no row, and unpublish checks it again where it becomes a path.
  const removed = table.rowsOf(manifest.path).filter((r) => !named.has(r.dest) && !unplaced.has(r.source));
  if (removed.length === 0) return [];
  const out: Removal[] = [];
  const say = (r: PublishedRow, state: Removal['state'], reason?: string): void => {
    out.push({ dest: r.dest, source: r.source, key: r.key, size: r.size, state, reason });
  };
  if (ctx.config.keepRemoved) {
    for (const r of removed) say(r, 'kept', '--keep-removed');
    return out;
  }
  const dry = opts.dryRun === true;
  const forget = (r: PublishedRow, final?: string): void => {
    if (dry) return;
    table.drop(manifest.path, r.dest);
    if (final !== undefined) ctx.db.forgetVerified(final);
  };
  const layer = new OnDemandTable(ctx.db, modelsDir);
  let others: Promise<RefsRecord[] | undefined> | undefined;
  const one = async (r: PublishedRow): Promise<void> => {
    const final = path.join(modelsDir, r.dest);
    if (layer.row(r.dest)) {
      say(r, 'kept', 'the on-demand layer holds it');
      forget(r);
      return;
    }
    const also = table.othersAt(r.dest, manifest.path);
    if (also.length > 0) {
      say(r, 'kept', `manifest ${also[0]} names it too`);
      forget(r);
      return;
    }
    const blob = blobPath(ctx.store, r.key);
    const verified = ctx.db.verifiedStamp(final);
    const { owner } = await ownerOf(modelsDir, r.dest, blob, verified);
    if (owner === 'absent') {
      forget(r, final);
      return;
    }
    if (owner === 'changed') {
      say(r, 'user-file');
      forget(r, final);
      return;
    }
    others ??= otherInstalls(ctx);
    const records = await others;
    if (records === undefined) {
      say(r, 'kept', 'a reference record in the store is unreadable');
      return;
    }
    const peer = records.find((rec) => rec.keys.includes(keyName(r.key)));
    if (peer) {
      say(r, 'kept', `another install using this models dir (${peer.host ?? peer.node}${peer.manifest === undefined ? '' : `, ${peer.manifest}`}) references its content`);
      forget(r);
      return;
    }
    if (dry) {
      say(r, 'unpublished');
      return;
    }
    const how = await unpublish(modelsDir, r.dest, blob, verified);
    if (how === 'removed') {
      ctx.log.info({ dest: r.dest, source: r.source }, 'unpublished: no longer in the manifest');
      say(r, 'unpublished');
    } else if (how === 'changed') say(r, 'user-file');
    forget(r, final);
  };
  for (const r of removed) {
    // A dest that cannot be judged (a permission error on the way) stays, and the rest go on.
    await one(r).catch((e: unknown) => {
      say(r, 'kept', `could not be checked (${errnoCode(e) ?? String(e)})`);
      ctx.log.warn({ dest: r.dest, err: String(e) }, 'no longer in the manifest, but could not be checked; left in place');
    });
  }
  for (const r of out) {
    if (r.state === 'user-file' && !dry) ctx.log.warn({ dest: r.dest, source: r.source }, 'left in place: no longer in the manifest, but the file there is not the one modelsync published');
  }
  return out;
}

/** Live reference records of other installs that name this models dir; undefined when one cannot be read. */
async function otherInstalls(ctx: SyncContext): Promise<RefsRecord[] | undefined> {
  const me = ctx.db.identity(ctx.config.modelsDir, ctx.store.root);
  try {
    const { records } = await readRecords(ctx.store);
    const now = Date.now();
    return records.filter((r) => r.node !== me && r.modelsDir === ctx.config.modelsDir && isLive(r, now, ctx.config.gc.refsMaxAgeMs));
  } catch {
    return undefined;
  }
}
