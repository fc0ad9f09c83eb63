import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { StateDb } from '../state/db.js';
import { fsyncDir, type DirSync } from '../store/blobs.js';
import path from 'node:path';
import { inDir } from '../fs/held-dir.js';
import { clearLeftoverTemps, type DirPlace, type PublishBatch } from '../store/publish.js';

interface Row {
  readonly write: () => void;
  readonly failed: (err: unknown) => void;
}

export interface BatchLimits {
  /** Flush once this many state DB writes are waiting... */
  readonly rows: number;
  /** ...or once this long has passed since the last flush (checked when a write is queued). */
  readonly ms: number;
}

const DEFAULT_LIMITS: BatchLimits = { rows: 4096, ms: 5000 };

/**
 * The durability point of one sync, shared by its commits and publishes. Per file, only what
 * makes the file itself safe is done on the spot: its bytes are fsync'ed before its name exists
 * (the downloader), and its name appears in one step (link or rename). What only makes that
 * name survive a power cut (an fsync of each folder that got a new entry) and what only
 * remembers it (the state DB rows) is gathered here and done in one pass, folders first:
 *
 * - a state DB row that claims a blob or a published file is written only after the folders
 *   holding their names were fsync'ed, so the index never gets ahead of the disk;
 * - the sync reports success only after its last flush (runSync awaits finish()), so "exit 0"
 *   and "ComfyUI may start" still mean everything is on stable storage.
 *
 * A crash (or power cut) before a flush loses at most names and rows, never bytes under a name:
 * a name that did not survive is simply absent (fetched again), and a name without its row is
 * re-checked by the next sync (stat, size, and for a recreated DB a re-hash) and published
 * without a download. Flushes also run every `limits.rows` writes or `limits.ms`, so a long
 * sync that dies late keeps most of its index.
 */
export class SyncBatch implements DirSync, PublishBatch {
  private dirty = new Set<string>();
  private rows: Row[] = [];
  private readonly names = new Map<string, { place: DirPlace; names: Set<string> }>();
  private chain: Promise<void> = Promise.resolve();
  /** A flush is queued and has not started: it will take whatever is queued by then. */
  private queued = false;
  private lastFlush: number;

  constructor(
    private readonly db: StateDb,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly limits: BatchLimits = DEFAULT_LIMITS,
  ) {
    this.lastFlush = clock.now();
  }

  deferDirSync(dir: string): void {
    this.dirty.add(dir);
  }

  published(place: DirPlace, name: string): void {
    const key = path.join(place.base, ...place.segs);
    let entry = this.names.get(key);
    if (!entry) {
      entry = { place, names: new Set() };
      this.names.set(key, entry);
    }
    entry.names.add(name);
  }

  /**
   * Queue a state DB write; it lands, in one transaction with the others, after every folder
   * fsync deferred before it. `failed` hears about a transaction that could not be written.
   */
  record(write: () => void, failed: (err: unknown) => void = () => undefined): void {
    this.rows.push({ write, failed });
    if (!this.queued && (this.rows.length >= this.limits.rows || this.clock.now() - this.lastFlush >= this.limits.ms)) void this.flush();
  }

  /** Fsync the folders touched so far, then write the rows queued so far. One flush at a time. */
  flush(): Promise<void> {
    this.queued = true;
    const p = this.chain.then(() => this.flushNow());
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** The end of a sync: leftover temps of every published name cleared, then a last flush. */
  async finish(): Promise<void> {
    const names = [...this.names];
    this.names.clear();
    // Each folder held again for its listing and unlinks: it may have been swapped since.
    for (const [, { place, names: set }] of names) await inDir(place.base, place.segs, (at) => clearLeftoverTemps(at, set)).catch(() => undefined);
    await this.flush();
  }

  private async flushNow(): Promise<void> {
    this.queued = false;
    this.lastFlush = this.clock.now();
    // Taken together: a name made after this point is in the next flush's folders and rows.
    const dirs = [...this.dirty];
    const rows = this.rows;
    this.dirty = new Set();
    this.rows = [];
    await Promise.all(dirs.map((d) => fsyncDir(d)));
    if (rows.length === 0) return;
    try {
      this.db.transaction(() => {
        for (const r of rows) r.write();
      });
    } catch (e) {
      this.log.error({ err: String(e), rows: rows.length }, 'could not write to the state DB');
      for (const r of rows) r.failed(e);
    }
  }
}
