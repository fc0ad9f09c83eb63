import { keyName, type ContentKey } from '../content-key.js';
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

interface Raw {
  dest: string;
  source: string;
  algo: ContentKey['algo'];
  hex: string;
  size: number;
  state: OnDemandRow['state'];
  last_used: number;
  created_at: number;
}

const COLUMNS = 'dest, source, algo, hex, size, state, last_used, created_at';

/** The `on_demand` table of the state DB, per models dir (two installs may share a state dir). */
export class OnDemandTable {
  constructor(
    private readonly db: StateDb,
    private readonly modelsDir: string,
  ) {}

  rows(): OnDemandRow[] {
    return (this.db.statement(`SELECT ${COLUMNS} FROM on_demand WHERE models_dir = ? ORDER BY last_used, dest`).all(this.modelsDir) as Raw[]).map(row);
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

function row(r: Raw): OnDemandRow {
  return { dest: r.dest, source: r.source, key: { algo: r.algo, hex: r.hex }, size: r.size, state: r.state, lastUsed: r.last_used, createdAt: r.created_at };
}
