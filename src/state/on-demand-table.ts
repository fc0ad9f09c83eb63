import { isContentKey, keyName, type ContentKey } from '../content-key.js';
import { plainDest } from '../manifest/dest.js';
import type { StateDb } from './db.js';

/**
 * One dest of an install's on-demand layer. 'fetching': reserved before its first byte moves (so
 * the reference record names its key and the layer counts its size); 'ready': published and
 * verified.
 */
export interface OnDemandRow {
  readonly dest: string;
  /** The normalised source URI (no query string). */
  readonly source: string;
  readonly key: ContentKey;
  readonly size: number;
  readonly state: 'fetching' | 'ready';
  /** Wall-clock ms: when a request last asked for it, or a pin on it was released. */
  readonly lastUsed: number;
  readonly createdAt: number;
}

/** As SQLite returns it: nothing in it is trusted until `row` has checked it. */
interface Raw {
  dest: unknown;
  source: unknown;
  algo: unknown;
  hex: unknown;
  size: unknown;
  state: unknown;
  last_used: unknown;
  created_at: unknown;
}

const COLUMNS = 'dest, source, algo, hex, size, state, last_used, created_at';

/** The `on_demand` table of the state DB, per models dir (two installs may share a state dir). */
export class OnDemandTable {
  constructor(
    private readonly db: StateDb,
    private readonly modelsDir: string,
  ) {}

  rows(): OnDemandRow[] {
    return (this.db.statement(`SELECT ${COLUMNS} FROM on_demand WHERE models_dir = ? ORDER BY last_used, dest`).all(this.modelsDir) as Raw[]).flatMap((r) => row(r) ?? []);
  }

  row(dest: string): OnDemandRow | undefined {
    const r = this.db.statement(`SELECT ${COLUMNS} FROM on_demand WHERE models_dir = ? AND dest = ?`).get(this.modelsDir, dest) as Raw | undefined;
    return r && row(r);
  }

  put(r: OnDemandRow): void {
    this.db
      .statement(`INSERT OR REPLACE INTO on_demand (models_dir, ${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(this.modelsDir, r.dest, r.source, r.key.algo, r.key.hex, r.size, r.state, r.lastUsed, r.createdAt);
  }

  touch(dest: string, at: number): void {
    this.db.statement('UPDATE on_demand SET last_used = ? WHERE models_dir = ? AND dest = ?').run(at, this.modelsDir, dest);
  }

  drop(dest: string): void {
    this.db.statement('DELETE FROM on_demand WHERE models_dir = ? AND dest = ?').run(this.modelsDir, dest);
  }

  /** Key names the layer holds or is fetching: the reference record keeps them for gc. */
  keys(): string[] {
    return [...new Set(this.rows().map((r) => keyName(r.key)))];
  }
}

/**
 * A row read back is a dest the layer may unpublish and a key whose blob it may remove: one this
 * modelsync could not have written (a dest that is not FOLDER/FILE of plain names, as one into the
 * store would be; a key that is not a content key; an impossible size or state) is no row at all,
 * like the `verified` table's. It is never evicted, counted or referenced; a request for its dest
 * finds no row, and the next put replaces it.
 */
function row(r: Raw): OnDemandRow | undefined {
  const key = { algo: r.algo, hex: r.hex };
  if (!plainDest(r.dest) || typeof r.source !== 'string' || !isContentKey(key)) return undefined;
  if (!isCount(r.size) || (r.state !== 'fetching' && r.state !== 'ready') || !isCount(r.last_used) || !isCount(r.created_at)) return undefined;
  return { dest: r.dest, source: r.source, key: { algo: key.algo, hex: key.hex }, size: r.size, state: r.state, lastUsed: r.last_used, createdAt: r.created_at };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
