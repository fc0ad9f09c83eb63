import { isContentKey, keyName, type ContentKey } from '../content-key.js';
import { plainDest } from '../manifest/dest.js';
import type { StateDb } from './db.js';

/**
 * What a manifest's sync placed at a dest of a models dir: the state DB's `published` table.
 * One row per models dir, manifest and dest: two manifests syncing into one models dir each
 * have their rows, so one dropping an entry never takes a file the other still names.
 * `manifest` is the manifest's absolute path; '' marks a row carried over from a state DB
 * older than the table (no manifest was recorded then): the first manifest that names its
 * dest takes it over (put), and it is never unpublished for a manifest that does not.
 */
export interface PublishedRow {
  readonly manifest: string;
  readonly dest: string;
  /** The source URI the content came from. */
  readonly source: string;
  readonly key: ContentKey;
  readonly size: number;
  readonly updatedAt: number;
}

interface Raw {
  manifest: string;
  dest: string;
  source: string;
  algo: ContentKey['algo'];
  hex: string;
  size: number;
  updated_at: number;
}

const COLUMNS = 'manifest, dest, source, algo, hex, size, updated_at';

/** The `published` rows of one models dir (installs may share a state dir). */
export class PublishedTable {
  constructor(
    private readonly db: StateDb,
    private readonly modelsDir: string,
  ) {}

  /**
   * What is known at this dest: this manifest's row, else the newest another manifest (or an
   * older modelsync) wrote. The caller still checks that it is the entry's source and content.
   */
  row(dest: string, manifest: string): PublishedRow | undefined {
    const r = this.db
      .statement(`SELECT ${COLUMNS} FROM published WHERE models_dir = ? AND dest = ? ORDER BY manifest = ? DESC, updated_at DESC LIMIT 1`)
      .get(this.modelsDir, dest, manifest) as Raw | undefined;
    return r && valid(r);
  }

  /** Does this manifest have its own row for the dest? */
  has(dest: string, manifest: string): boolean {
    return this.db.statement('SELECT 1 FROM published WHERE models_dir = ? AND manifest = ? AND dest = ?').get(this.modelsDir, manifest, dest) !== undefined;
  }

  /** This manifest placed (or found in place) this content at dest; a carried-over row for it is taken over. */
  put(manifest: string, dest: string, source: string, key: ContentKey, size: number): void {
    this.db.statement(`INSERT OR REPLACE INTO published (models_dir, ${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`).run(this.modelsDir, manifest, dest, source, key.algo, key.hex, size, Date.now());
    if (manifest !== '') this.drop('', dest);
  }

  /** Every row of one manifest, by dest. */
  rowsOf(manifest: string): PublishedRow[] {
    const rows = this.db.statement(`SELECT ${COLUMNS} FROM published WHERE models_dir = ? AND manifest = ? ORDER BY dest`).all(this.modelsDir, manifest) as Raw[];
    return rows.flatMap((r) => valid(r) ?? []);
  }

  /** The other manifests (not '') that have a row for this dest. */
  othersAt(dest: string, manifest: string): string[] {
    const rows = this.db.statement("SELECT manifest FROM published WHERE models_dir = ? AND dest = ? AND manifest <> ? AND manifest <> '' ORDER BY manifest").all(this.modelsDir, dest, manifest) as { manifest: string }[];
    return rows.map((r) => r.manifest);
  }

  /** Key names of everything published into this models dir, by any manifest: the reference record keeps them. */
  keys(): string[] {
    const rows = this.db.statement('SELECT DISTINCT algo, hex FROM published WHERE models_dir = ?').all(this.modelsDir) as { algo: ContentKey['algo']; hex: string }[];
    return rows.filter((r) => isContentKey(r)).map((r) => keyName(r));
  }

  drop(manifest: string, dest: string): void {
    this.db.statement('DELETE FROM published WHERE models_dir = ? AND manifest = ? AND dest = ?').run(this.modelsDir, manifest, dest);
  }
}

/**
 * A row whose key could not name a blob, or whose dest is not FOLDER/FILE of plain names, was
 * never written by this modelsync (a state DB edited by hand, or by an attacker): no row at all,
 * so its dest never becomes a path.
 */
function valid(r: Raw): PublishedRow | undefined {
  if (!isContentKey(r) || !plainDest(r.dest) || typeof r.manifest !== 'string' || typeof r.source !== 'string') return undefined;
  if (!Number.isSafeInteger(r.size) || r.size < 0) return undefined;
  return { manifest: r.manifest, dest: r.dest, source: r.source, key: { algo: r.algo, hex: r.hex }, size: r.size, updatedAt: r.updated_at };
}
