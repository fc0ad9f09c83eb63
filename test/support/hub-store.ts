import { createHash, randomBytes } from 'node:crypto';
import type { HubFile, HubRepo, RepoType } from './hub-types.js';
import { xetHashOf } from './hub-xet.js';

export function sha256Hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export function gitBlobSha1Hex(b: Buffer): string {
  return createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
}

const LFS_EXTENSIONS = /\.(safetensors|bin|ckpt|pt|pth|gguf|onnx)$/i;

export interface StoredFile {
  path: string;
  content: Buffer;
  lfs: boolean;
  sha256: string;
  /** What git stores for the path: the blob itself, or for LFS the pointer file. */
  blobId: string;
  pointerSize: number;
  /** Set for large files of a Xet repo. */
  xetHash?: string;
}

export interface Commit {
  sha: string;
  date: Date;
  files: Map<string, StoredFile>;
  /** Git tree oid per directory path ('' is the root). */
  dirs: Map<string, string>;
}

export interface StoredRepo {
  id: string;
  type: RepoType;
  private: boolean;
  gated: boolean;
  xet: boolean;
  mongoId: string;
  createdAt: Date;
  commits: Map<string, Commit>;
  refs: Map<string, string>;
}

export interface TreeEntry {
  type: 'file' | 'directory';
  oid: string;
  size: number;
  path: string;
  lfs?: { oid: string; size: number; pointerSize: number };
  xetHash?: string;
}

function storeFile(f: HubFile): StoredFile {
  const lfs = f.lfs ?? (LFS_EXTENSIONS.test(f.path) || f.content.length > 100_000);
  const sha256 = sha256Hex(f.content);
  if (!lfs) return { path: f.path, content: f.content, lfs, sha256, blobId: gitBlobSha1Hex(f.content), pointerSize: 0 };
  const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${f.content.length}\n`);
  return { path: f.path, content: f.content, lfs, sha256, blobId: gitBlobSha1Hex(pointer), pointerSize: pointer.length };
}

function parentDir(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

// Real git tree hashes, so directory oids behave like the Hub's (change exactly when content does).
function directoryOids(files: Map<string, StoredFile>): Map<string, string> {
  const children = new Map<string, Map<string, { mode: string; oid: string | null }>>();
  const ensure = (dir: string): Map<string, { mode: string; oid: string | null }> => {
    let c = children.get(dir);
    if (!c) {
      c = new Map();
      children.set(dir, c);
      if (dir !== '') {
        const parent = parentDir(dir);
        ensure(parent).set(dir.slice(parent === '' ? 0 : parent.length + 1), { mode: '40000', oid: null });
      }
    }
    return c;
  };
  ensure('');
  for (const f of files.values()) {
    const dir = parentDir(f.path);
    ensure(dir).set(f.path.slice(dir === '' ? 0 : dir.length + 1), { mode: '100644', oid: f.blobId });
  }
  const oids = new Map<string, string>();
  const hashDir = (dir: string): string => {
    const known = oids.get(dir);
    if (known !== undefined) return known;
    const entries = [...(children.get(dir) ?? new Map<string, { mode: string; oid: string | null }>())].map(([name, e]) => {
      const oid = e.oid ?? hashDir(dir === '' ? name : `${dir}/${name}`);
      return { name, mode: e.mode, oid, sortKey: e.mode === '40000' ? `${name}/` : name };
    });
    entries.sort((a, b) => Buffer.compare(Buffer.from(a.sortKey), Buffer.from(b.sortKey)));
    const body = Buffer.concat(entries.map((e) => Buffer.concat([Buffer.from(`${e.mode} ${e.name}\0`), Buffer.from(e.oid, 'hex')])));
    const oid = createHash('sha1').update(`tree ${body.length}\0`).update(body).digest('hex');
    oids.set(dir, oid);
    return oid;
  };
  for (const dir of children.keys()) hashDir(dir);
  return oids;
}

export class RepoStore {
  private readonly repos = new Map<string, StoredRepo>();
  private readonly blobs = new Map<string, Buffer>();
  private readonly xetBlobs = new Map<string, StoredFile>();

  add(repo: HubRepo): { commit: string } {
    const type = repo.type ?? 'model';
    if (!/^[^/]+\/[^/]+$/.test(repo.id)) throw new Error(`repo id must be "org/name": ${repo.id}`);
    if (this.repos.has(`${type}/${repo.id}`)) throw new Error(`repo already exists: ${type} ${repo.id}`);
    const now = new Date();
    this.repos.set(`${type}/${repo.id}`, {
      id: repo.id,
      type,
      private: repo.private ?? false,
      gated: repo.gated ?? false,
      xet: repo.xet ?? false,
      mongoId: randomBytes(12).toString('hex'),
      createdAt: now,
      commits: new Map(),
      refs: new Map(),
    });
    return this.push(repo.id, repo.files, type);
  }

  /** A new commit on main holding main's files overlaid with `files` (same path replaces). */
  push(repoId: string, files: HubFile[], type: RepoType = 'model'): { commit: string } {
    const repo = this.mustGet(type, repoId);
    const head = this.commitFor(repo, 'main');
    const tree = new Map(head?.files ?? []);
    for (const f of files) {
      const stored = storeFile(f);
      if (repo.xet && stored.lfs) {
        stored.xetHash = xetHashOf(stored.content);
        this.xetBlobs.set(stored.xetHash, stored);
      }
      tree.set(f.path, stored);
      if (stored.lfs) this.blobs.set(stored.sha256, stored.content);
    }
    const sha = createHash('sha1').update(randomBytes(20)).update(head?.sha ?? '').digest('hex');
    repo.commits.set(sha, { sha, date: new Date(), files: tree, dirs: directoryOids(tree) });
    repo.refs.set('main', sha);
    return { commit: sha };
  }

  setRef(repoId: string, ref: string, commit: string, type: RepoType = 'model'): void {
    const repo = this.mustGet(type, repoId);
    if (!repo.commits.has(commit)) throw new Error(`unknown commit ${commit} in ${repoId}`);
    repo.refs.set(ref, commit);
  }

  get(type: RepoType, id: string): StoredRepo | undefined {
    return this.repos.get(`${type}/${id}`);
  }

  blob(sha256: string): Buffer | undefined {
    return this.blobs.get(sha256);
  }

  xetBlob(xetHash: string): StoredFile | undefined {
    return this.xetBlobs.get(xetHash);
  }

  commitFor(repo: StoredRepo, rev: string): Commit | undefined {
    // modelInfo() in @huggingface/hub asks for revision "HEAD" by default.
    const name = rev === 'HEAD' ? 'main' : rev;
    const sha = repo.refs.get(name) ?? (/^[0-9a-f]{40}$/.test(name) ? name : undefined);
    return sha === undefined ? undefined : repo.commits.get(sha);
  }

  /**
   * Splits already-decoded URL segments into revision and the rest. Clients percent-encode a
   * revision with slashes, but listFiles() in @huggingface/hub sends it raw, so the longest
   * known ref that prefixes the segments wins.
   */
  splitRevision(repo: StoredRepo, segments: string[]): { rev: string; rest: string[] } {
    for (let n = segments.length; n > 1; n--) {
      const candidate = segments.slice(0, n).join('/');
      if (repo.refs.has(candidate)) return { rev: candidate, rest: segments.slice(n) };
    }
    return { rev: segments[0] ?? '', rest: segments.slice(1) };
  }

  private mustGet(type: RepoType, id: string): StoredRepo {
    const repo = this.get(type, id);
    if (!repo) throw new Error(`unknown repo: ${type} ${id}`);
    return repo;
  }
}

export function fileEntry(f: StoredFile): TreeEntry {
  const entry: TreeEntry = { type: 'file', oid: f.blobId, size: f.content.length, path: f.path };
  if (f.lfs) entry.lfs = { oid: f.sha256, size: f.content.length, pointerSize: f.pointerSize };
  if (f.xetHash !== undefined) entry.xetHash = f.xetHash;
  return entry;
}

export function entryAt(commit: Commit, path: string): TreeEntry | undefined {
  const file = commit.files.get(path);
  if (file) return fileEntry(file);
  const dirOid = path === '' ? undefined : commit.dirs.get(path);
  return dirOid === undefined ? undefined : { type: 'directory', oid: dirOid, size: 0, path };
}

/** Entries under `dir` ('' = root), or undefined when `dir` is not a directory of the commit. */
export function treeEntries(commit: Commit, dir: string, recursive: boolean): TreeEntry[] | undefined {
  if (!commit.dirs.has(dir)) return undefined;
  const prefix = dir === '' ? '' : `${dir}/`;
  const wanted = (p: string): boolean => p.startsWith(prefix) && p !== dir && (recursive || !p.slice(prefix.length).includes('/'));
  const out: TreeEntry[] = [];
  for (const [path, oid] of commit.dirs) if (path !== '' && wanted(path)) out.push({ type: 'directory', oid, size: 0, path });
  for (const f of commit.files.values()) if (wanted(f.path)) out.push(fileEntry(f));
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export function siblings(commit: Commit, withBlobs: boolean): Array<Record<string, unknown>> {
  return [...commit.files.values()]
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    .map((f) => {
      if (!withBlobs) return { rfilename: f.path };
      const s: Record<string, unknown> = { rfilename: f.path, size: f.content.length, blobId: f.blobId };
      if (f.lfs) s['lfs'] = { size: f.content.length, sha256: f.sha256, pointerSize: f.pointerSize };
      return s;
    });
}
