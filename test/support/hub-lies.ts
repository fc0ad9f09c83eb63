import type { TreeEntry } from './hub-store.js';

/**
 * What a hostile Hub or mirror says about a file in its paths-info and tree answers instead of
 * the truth. Each field, when present, replaces the real value as it is (any JSON value: a path,
 * a number, an object), so tests can send what no schema would allow. The bytes served for the
 * file do not change: a lie is in the metadata alone.
 */
export interface EntryLies {
  /** Replaces `lfs.oid` (an LFS file's sha256). */
  lfsOid?: unknown;
  /** Replaces `oid` (the git blob sha1). */
  oid?: unknown;
  size?: unknown;
  /** Replaces `lfs.size`. */
  lfsSize?: unknown;
  /** Drops the `lfs` object: an LFS file described as a plain git file. */
  noLfs?: boolean;
  /** Items appended to any answer that lists this path: paths nobody asked about, or not even objects. */
  extra?: readonly unknown[];
}

/** The lying-metadata mode of the Hub stand-in: per path (in every repo) and per repo revision. */
export class MetadataLies {
  private readonly entries = new Map<string, EntryLies>();
  private readonly revisions = new Map<string, unknown>();

  /** Lie about `path` (matched in every repo) from now on. */
  about(path: string, lies: EntryLies): void {
    this.entries.set(path, structuredClone(lies));
  }

  /** Answer `sha` (any JSON value) for every revision of `repoId`. */
  revision(repoId: string, sha: unknown): void {
    this.revisions.set(repoId, sha);
  }

  clear(): void {
    this.entries.clear();
    this.revisions.clear();
  }

  /** The commit sha to put in a revision answer of `repoId`. */
  sha(repoId: string, real: string): unknown {
    return this.revisions.has(repoId) ? this.revisions.get(repoId) : real;
  }

  /** The entries of a paths-info or tree answer, lies applied and extras appended. */
  answer(entries: readonly TreeEntry[]): unknown[] {
    const out: unknown[] = [];
    const extras: unknown[] = [];
    for (const e of entries) {
      const lies = this.entries.get(e.path);
      if (!lies) {
        out.push({ ...e });
        continue;
      }
      const j: Record<string, unknown> = { ...e, ...(e.lfs ? { lfs: { ...e.lfs } } : {}) };
      if ('oid' in lies) j['oid'] = lies.oid;
      if ('size' in lies) j['size'] = lies.size;
      const lfs = j['lfs'] as Record<string, unknown> | undefined;
      if (lfs && 'lfsOid' in lies) lfs['oid'] = lies.lfsOid;
      if (lfs && 'lfsSize' in lies) lfs['size'] = lies.lfsSize;
      if (lies.noLfs) delete j['lfs'];
      out.push(j);
      extras.push(...(lies.extra ?? []));
    }
    return [...out, ...extras];
  }
}
