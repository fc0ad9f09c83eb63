import path from 'node:path';
import { keyName, type ContentKey } from '../content-key.js';
import { ModelsyncError } from '../errors.js';
import { fmt } from '../fmt.js';
import type { Manifest } from '../manifest/types.js';
import { OnDemandTable, type OnDemandRow } from '../state/on-demand-table.js';
import { PublishedTable } from '../state/published-table.js';
import { sameContentStamp, sameStamp, stampOf } from '../store/blobs.js';
import { blobPath } from '../store/layout.js';
import { releaseBlob } from '../store/release-blob.js';
import { unpublish } from '../store/unpublish.js';
import type { SyncContext } from '../sync/context.js';
import { writeRefs } from '../sync/refs.js';
import type { Normalised } from './normalise.js';
import type { ModelProgress } from './service.js';

/** What a request finds at its dest before anything is fetched. */
export type Found = 'ready' | 'user' | 'absent';

/** A blob about to be fetched for the layer: its reservation. */
export interface Admission {
  readonly dest: string;
  readonly uri: string;
  /** For a download that learns its key, the placeholder that names it. */
  readonly key: ContentKey;
  readonly size: number;
}

/**
 * The on-demand layer of this install (models dir + store): rows in the state DB, pins held by
 * running prompts, a capacity (`on_demand.max_bytes`) counted over the distinct blobs of its
 * rows that no manifest entry needs, and least-recently-used eviction to stay within it.
 * Content a manifest entry also needs, and dests the manifest has, are never the layer's to
 * count or evict. Admissions and evictions run one at a time (`exclusive`).
 */
export class OnDemandLayer {
  readonly table: OnDemandTable;
  evictions = 0;
  private readonly pins = new Map<string, Set<string>>();
  private lastStamp = 0;
  private turn: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly ctx: SyncContext,
    private readonly manifest: () => Manifest,
    private readonly evicted: (m: ModelProgress) => void,
  ) {
    this.table = new OnDemandTable(ctx.db, ctx.config.modelsDir);
  }

  /** Wall-clock ms, strictly increasing: LRU order must not depend on two uses in one millisecond. */
  stamp(): number {
    this.lastStamp = Math.max(Date.now(), this.lastStamp + 1);
    return this.lastStamp;
  }

  pin(dest: string, holder: string): void {
    const set = this.pins.get(dest) ?? new Set<string>();
    set.add(holder);
    this.pins.set(dest, set);
  }

  /** A prompt has run: its dests count as used now, and may be evicted again. */
  unpin(holder: string): void {
    for (const [dest, set] of this.pins) {
      if (!set.delete(holder)) continue;
      if (set.size === 0) this.pins.delete(dest);
      if (this.table.row(dest)) this.table.touch(dest, this.stamp());
    }
  }

  pinnedCount(): number {
    return this.pins.size;
  }

  /** Run `fn` after every admission and eviction before it. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.turn.then(fn);
    this.turn = next.catch(() => undefined);
    return next;
  }

  /**
   * Is this request's content already at its dest? 'ready': the layer's row for it, and the file
   * is the one verified then (stat and the state DB, as a warm start decides). 'user': a file
   * modelsync did not place (or that changed since it did) is there: never replaced.
   */
  async find(n: Normalised): Promise<Found> {
    const final = path.join(this.ctx.config.modelsDir, n.entry.dest);
    const now = await stampOf(final);
    if (now === undefined) return 'absent';
    const row = this.table.row(n.entry.dest);
    const verified = this.ctx.db.verifiedStamp(final);
    // Ours: the inode modelsync verified there, its size and mtime unchanged. Another inode (or
    // none verified) is someone else's file, never replaced.
    if (!verified || !sameContentStamp(now, verified)) {
      if (row) this.table.drop(n.entry.dest);
      return 'user';
    }
    // Its ctime moved (not by a link of ours): it is verified again on the way, not trusted.
    if (!sameStamp(now, verified)) return 'absent';
    if (!row || row.state !== 'ready' || row.key.algo !== verified.algo || row.key.hex !== verified.hex) return 'absent';
    if (row.source !== n.uri || (n.entry.sha256 !== undefined && (row.key.algo !== 'sha256' || row.key.hex !== n.entry.sha256))) return 'absent';
    if (n.entry.size !== undefined && row.size !== n.entry.size) return 'absent';
    this.table.touch(n.entry.dest, this.stamp());
    return 'ready';
  }

  /** A ready row for this source whose blob is in the store: a TOFU request's content, learnt before. */
  learnt(uri: string): OnDemandRow | undefined {
    return this.table.rows().find((r) => r.state === 'ready' && r.source === uri);
  }

  /**
   * Make room for these blobs and reserve them (rows in state 'fetching', the reference record
   * rewritten), evicting least-recently-used entries as needed. Per admission: undefined when
   * reserved, or why not (E_POLICY, naming max_bytes). Call inside `exclusive`.
   */
  async admit(items: readonly Admission[]): Promise<(ModelsyncError | undefined)[]> {
    const max = this.manifest().onDemand?.maxBytes ?? 0;
    const { keys: manifestKeys, dests: manifestDests } = this.manifestNeeds();
    const counted = (r: OnDemandRow): boolean => !manifestDests.has(r.dest) && !manifestKeys.has(keyName(r.key));
    const incoming = new Set(items.map((i) => i.dest));
    const released = new Set<string>();
    const out: (ModelsyncError | undefined)[] = [];
    const admitted = new Set<string>();
    for (const item of items) {
      const k = keyName(item.key);
      if (item.size > max) {
        out.push(new ModelsyncError('E_POLICY', `${item.uri} is ${fmt(item.size)}, more than on_demand.max_bytes (${fmt(max)})`, { dest: item.dest }));
        continue;
      }
      // A dest of the layer that holds other content: that content goes first (unless in use).
      const old = this.table.row(item.dest);
      if (old && keyName(old.key) !== k) {
        if (this.pins.has(old.dest)) {
          out.push(new ModelsyncError('E_POLICY', `${item.dest} holds other content that a running prompt uses; not replaced`, { dest: item.dest }));
          continue;
        }
        await this.evict(old, released);
      }
      const sizes = (): Map<string, number> => new Map(this.table.rows().filter(counted).map((r) => [keyName(r.key), r.size]));
      let used = sizes();
      const free = used.has(k) || manifestKeys.has(k);
      let refused: ModelsyncError | undefined;
      while (!free && sum(used) + item.size > max) {
        const victim = this.table
          .rows()
          .find((r) => r.state === 'ready' && counted(r) && !this.pins.has(r.dest) && !incoming.has(r.dest) && !admitted.has(keyName(r.key)));
        if (!victim) {
          refused = new ModelsyncError('E_POLICY', `${item.uri} (${fmt(item.size)}) does not fit in on_demand.max_bytes (${fmt(max)}): ${fmt(sum(used))} is held by entries in use (pinned by running prompts or being fetched)`, { dest: item.dest });
          break;
        }
        await this.evict(victim, released);
        used = sizes();
      }
      if (refused) {
        out.push(refused);
        continue;
      }
      const at = this.stamp();
      this.table.put({ dest: item.dest, source: item.uri, key: item.key, size: item.size, state: 'fetching', lastUsed: at, createdAt: at });
      admitted.add(k);
      out.push(undefined);
    }
    await this.recordRefs(released);
    return out;
  }

  /** A reservation that came to nothing (the fetch failed): its row goes, and its key if no row has it. */
  async cancel(dests: readonly string[]): Promise<void> {
    const released = new Set<string>();
    for (const d of dests) {
      const row = this.table.row(d);
      if (!row || row.state !== 'fetching') continue;
      this.table.drop(d);
      released.add(keyName(row.key));
    }
    await this.recordRefs(released, false);
  }

  /** After fetches: the record again, without the placeholders of downloads that learnt their key. */
  async settled(placeholders: readonly ContentKey[]): Promise<void> {
    await this.recordRefs(new Set(placeholders.map(keyName)), false);
  }

  /** Bytes the layer holds (its counted blobs, once each) and its entries. */
  usage(): { bytes: number; entries: number } {
    const { keys, dests } = this.manifestNeeds();
    const rows = this.table.rows();
    const byKey = new Map(rows.filter((r) => !dests.has(r.dest) && !keys.has(keyName(r.key))).map((r) => [keyName(r.key), r.size]));
    return { bytes: sum(byKey), entries: rows.length };
  }

  private async evict(row: OnDemandRow, released: Set<string>): Promise<void> {
    const final = path.join(this.ctx.config.modelsDir, row.dest);
    const blob = blobPath(this.ctx.store, row.key);
    const how = await unpublish(this.ctx.config.modelsDir, row.dest, blob, this.ctx.db.verifiedStamp(final));
    this.ctx.db.forgetVerified(final);
    this.table.drop(row.dest);
    this.evictions++;
    released.add(keyName(row.key));
    this.ctx.log.info({ dest: row.dest, source: row.source, size: row.size, unpublished: how === 'removed' }, 'on-demand entry evicted');
    this.evicted({ dest: row.dest, source: row.source, state: 'evicted', bytes: 0, total: row.size, speed: 0 });
  }

  /**
   * The reference record without the released keys no row holds any more; then those blobs are
   * removed from the store at once where nothing else can want them (releaseBlob), so that
   * max_bytes bounds the disk the layer takes, not only what it publishes.
   */
  private async recordRefs(released: ReadonlySet<string>, removeBlobs = true): Promise<void> {
    const still = new Set(this.table.keys());
    const drop = [...released].filter((k) => !still.has(k));
    await writeRefs(this.ctx, this.manifest().path, [], { merge: true, drop }).catch((e: unknown) => this.ctx.log.warn({ err: String(e) }, 'could not record references for gc'));
    if (!removeBlobs) return;
    const { keys: manifestKeys } = this.manifestNeeds();
    for (const name of drop) {
      const key = parseKey(name);
      if (!key || manifestKeys.has(name)) continue;
      const gone = await releaseBlob(this.ctx.store, key, { refsMaxAgeMs: this.ctx.config.gc.refsMaxAgeMs, busy: this.ctx.inflight.has(name) }).catch((e: unknown) => {
        this.ctx.log.warn({ blob: name, err: String(e) }, 'could not remove an evicted blob; gc will');
        return 'kept' as const;
      });
      if (gone === 'removed') this.ctx.db.forgetVerified(blobPath(this.ctx.store, key));
    }
  }

  /** Keys the manifest's entries need (as far as known: hashes, lock pins, what they were published with) and its dests. */
  private manifestNeeds(): { keys: Set<string>; dests: Set<string> } {
    const keys = new Set<string>();
    const dests = new Set<string>();
    const manifest = this.manifest();
    const published = new PublishedTable(this.ctx.db, this.ctx.config.modelsDir);
    for (const e of manifest.entries) {
      dests.add(e.dest);
      if (e.sha256 !== undefined) keys.add(`sha256-${e.sha256}`);
      if (e.pinned) keys.add(`${e.pinned.algo}-${e.pinned.hex}`);
      const rec = published.row(e.dest, manifest.path);
      if (rec && rec.source === e.source.uri) keys.add(keyName(rec.key));
    }
    return { keys, dests };
  }
}

function sum(m: ReadonlyMap<string, number>): number {
  let n = 0;
  for (const v of m.values()) n += v;
  return n;
}

function parseKey(name: string): ContentKey | undefined {
  const m = /^(sha256|gitsha1)-([0-9a-f]+)$/.exec(name);
  return m ? { algo: m[1] as ContentKey['algo'], hex: m[2] ?? '' } : undefined;
}
