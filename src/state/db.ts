import type Database from 'better-sqlite3';
import { isCommit, isContentKey, type ContentKey } from '../content-key.js';
import { stateDbError } from './db-errors.js';
import { openStateFile, type OpenOptions } from './db-open.js';

/**
 * What a file was when it was verified. A file is trusted without reading it only while all of
 * these are unchanged: the ctime too, because an mtime can be set back by anyone who can write
 * the file (touch -d), and the ctime cannot. A hard link made or removed moves the ctime as well
 * (it is the inode's), so a blob another models dir links is re-verified once.
 */
export interface FileStamp {
  readonly dev: string;
  readonly ino: string;
  readonly size: number;
  readonly mtimeNs: string;
  readonly ctimeNs: string;
}

export interface HfFileRow {
  readonly repoType: string;
  readonly repo: string;
  readonly commit: string;
  readonly path: string;
  readonly size: number;
  readonly algo: ContentKey['algo'];
  readonly hex: string;
}

/** What StateDb runs a statement through: every failure leaves as stateDbError's verdict. */
export interface Guarded {
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  run(...params: unknown[]): unknown;
}

/**
 * The local index: which files were verified (keyed by path and stamped with dev/inode/size/
 * mtime so an unchanged file is trusted without reading it), and Hub resolutions. It is only an
 * index: losing it costs a re-verify, never data.
 */
export class StateDb {
  /** Prepared once: a warm start asks two questions per entry, and preparing costs more than asking. */
  private readonly statements = new Map<string, Guarded>();
  private readonly identities = new Map<string, string>();

  private constructor(
    private readonly db: Database.Database,
    private readonly file: string,
    private readonly busyTimeoutMs: number,
  ) {}

  /** A prepared statement (prepared once), every failure mapped as stateDbError does: for tables kept in their own module. */
  statement(sql: string): Guarded {
    return this.stmt(sql);
  }

  private stmt(sql: string): Guarded {
    let g = this.statements.get(sql);
    if (!g) {
      const st = this.guard(() => this.db.prepare(sql));
      g = { get: (...p) => this.guard(() => st.get(...p)), all: (...p) => this.guard(() => st.all(...p)), run: (...p) => this.guard(() => st.run(...p)) };
      this.statements.set(sql, g);
    }
    return g;
  }

  /** A locked, full or read-only DB in the middle of a sync is one clear error, like at open. */
  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw stateDbError(e, this.file, this.busyTimeoutMs);
    }
  }

  /** STATE/state.db, opened as db-open.ts does (local, no symlinks, checked, at the current schema). */
  static open(stateDir: string, opts: OpenOptions = {}): StateDb {
    const { db, file, busyTimeoutMs } = openStateFile(stateDir, opts);
    return new StateDb(db, file, busyTimeoutMs);
  }

  close(): void {
    this.db.close();
  }

  verifiedStamp(p: string): (FileStamp & ContentKey) | undefined {
    const r = this.stmt('SELECT dev, ino, size, mtime_ns, ctime_ns, algo, hex FROM verified WHERE path = ?').get(p) as
      | { dev: string; ino: string; size: number; mtime_ns: string; ctime_ns: string; algo: ContentKey['algo']; hex: string }
      | undefined;
    // Rows name store files: one this modelsync would never write (an older one took a hostile
    // mirror's word for it, or the file was edited) is no row at all.
    if (!r || !isContentKey(r)) return undefined;
    return { dev: r.dev, ino: r.ino, size: r.size, mtimeNs: r.mtime_ns, ctimeNs: r.ctime_ns, algo: r.algo, hex: r.hex };
  }

  putVerified(p: string, stamp: FileStamp, key: ContentKey): void {
    this.stmt('INSERT OR REPLACE INTO verified (path, dev, ino, size, mtime_ns, ctime_ns, algo, hex, verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
      p,
      stamp.dev,
      stamp.ino,
      stamp.size,
      stamp.mtimeNs,
      stamp.ctimeNs,
      key.algo,
      key.hex,
      Date.now(),
    );
  }

  forgetVerified(p: string): void {
    this.stmt('DELETE FROM verified WHERE path = ?').run(p);
  }

  hfRevision(repoType: string, repo: string, revision: string): string | undefined {
    const r = this.stmt('SELECT commit_sha FROM hf_revisions WHERE repo_type = ? AND repo = ? AND revision = ?').get(repoType, repo, revision) as { commit_sha: string } | undefined;
    return isCommit(r?.commit_sha) ? r.commit_sha : undefined;
  }

  putHfRevision(repoType: string, repo: string, revision: string, commit: string): void {
    this.stmt('INSERT OR REPLACE INTO hf_revisions VALUES (?, ?, ?, ?, ?)').run(repoType, repo, revision, commit, Date.now());
  }

  /** A value kept for this node (`meta`), or undefined. */
  meta(key: string): string | undefined {
    return (this.stmt('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  putMeta(key: string, value: string): void {
    this.stmt('INSERT OR REPLACE INTO meta VALUES (?, ?)').run(key, value);
  }

  hfFile(repoType: string, repo: string, commit: string, p: string): HfFileRow | undefined {
    const r = this.stmt('SELECT size, algo, hex FROM hf_files WHERE repo_type = ? AND repo = ? AND commit_sha = ? AND path = ?').get(repoType, repo, commit, p) as
      | { size: number; algo: ContentKey['algo']; hex: string }
      | undefined;
    if (!r || !isContentKey(r) || !Number.isSafeInteger(r.size) || r.size < 0) return undefined;
    return { repoType, repo, commit, path: p, size: r.size, algo: r.algo, hex: r.hex };
  }

  /** A Civitai model version as its API described it (validated, normalized JSON): versions do not change. */
  civitaiVersion(versionId: number): string | undefined {
    const r = this.stmt('SELECT data FROM civitai_versions WHERE version_id = ?').get(versionId) as { data: string } | undefined;
    return r?.data;
  }

  putCivitaiVersion(versionId: number, data: string): void {
    this.stmt('INSERT OR REPLACE INTO civitai_versions VALUES (?, ?, ?)').run(versionId, data, Date.now());
  }

  putHfFile(f: HfFileRow): void {
    this.stmt('INSERT OR REPLACE INTO hf_files VALUES (?, ?, ?, ?, ?, ?, ?)').run(f.repoType, f.repo, f.commit, f.path, f.size, f.algo, f.hex);
  }

  /**
   * This install's id in a store: names its reference record there (STORE/refs/<id>.json), which
   * gc reads as "what this install still needs". One per models dir and store, not one per state
   * dir: two models dirs sharing a store and a state dir are two installs, and one record for
   * both would let the second's sync drop what the first still uses. Made once and kept.
   *
   * Migration: the id a state DB held before (one per state dir, in `meta`) is taken over by the
   * first install that asks for it in each store, so the record it wrote keeps being rewritten
   * (and shrunk) instead of living on unowned for the records' whole lifetime.
   */
  identity(modelsDir: string, storeDir: string): string {
    const known = this.identities.get(`${modelsDir}\0${storeDir}`);
    if (known !== undefined) return known;
    const find = (): string | undefined => (this.stmt('SELECT node_id FROM identities WHERE models_dir = ? AND store_dir = ?').get(modelsDir, storeDir) as { node_id: string } | undefined)?.node_id;
    let id = find();
    if (id === undefined) {
      // IMMEDIATE: two processes on one state dir must not both take over the old id for one store.
      this.guard(() =>
        this.db
          .transaction(() => {
            if (find() !== undefined) return;
            const legacy = (this.stmt("SELECT value FROM meta WHERE key = 'node_id'").get() as { value: string } | undefined)?.value;
            const taken = legacy !== undefined && this.stmt('SELECT 1 FROM identities WHERE node_id = ? AND store_dir = ?').get(legacy, storeDir) !== undefined;
            // The global Web Crypto, not an import of node:crypto: a warm start would load
            // crypto (milliseconds) for this alone, which runs once per install.
            const fresh = legacy !== undefined && !taken ? legacy : Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex');
            this.stmt('INSERT INTO identities VALUES (?, ?, ?, ?)').run(modelsDir, storeDir, fresh, Date.now());
          })
          .immediate(),
      );
      id = find();
      if (id === undefined) throw new Error('identity row missing right after its insert');
    }
    this.identities.set(`${modelsDir}\0${storeDir}`, id);
    return id;
  }

  /** Run several writes as one transaction (one fsync instead of many). */
  transaction(fn: () => void): void {
    this.guard(() => this.db.transaction(fn)());
  }
}
