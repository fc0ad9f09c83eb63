import { checkAccess, type AccessPolicy } from './hub-access.js';
import { methodNotAllowed, notFoundPage, readBody, sendError, sendJson, type Exchange } from './hub-http.js';
import { entryAt, siblings, treeEntries, type Commit, type RepoStore, type StoredRepo, type TreeEntry } from './hub-store.js';
import type { MetadataLies } from './hub-lies.js';
import type { RepoType } from './hub-types.js';

export interface ApiEnv {
  store: RepoStore;
  /** The lying-metadata mode: what paths-info, tree and revision answers say instead of the truth. */
  lies: MetadataLies;
  /** Read on every request: tests change these on the live Hub. */
  settings: AccessPolicy & { treePageSize: number };
}

function repoInfo(repo: StoredRepo, commit: Commit, withBlobs: boolean, lies: MetadataLies): Record<string, unknown> {
  const info: Record<string, unknown> = {
    _id: repo.mongoId,
    id: repo.id,
    author: repo.id.slice(0, repo.id.indexOf('/')),
    sha: lies.sha(repo.id, commit.sha),
    lastModified: commit.date.toISOString(),
    createdAt: repo.createdAt.toISOString(),
    private: repo.private,
    gated: repo.gated ? 'manual' : false,
    disabled: false,
    downloads: 0,
    likes: 0,
    tags: [],
    cardData: {},
    siblings: siblings(commit, withBlobs),
    usedStorage: [...commit.files.values()].reduce((n, f) => n + f.content.length, 0),
  };
  if (repo.type === 'model') Object.assign(info, { modelId: repo.id, pipeline_tag: null, library_name: null, spaces: [] });
  else Object.assign(info, { description: '', citation: '', paperswithcode_id: null });
  return info;
}

/** Like the Hub: once any `expand` is given, only `_id`, `id` and the expanded keys come back. */
function applyExpand(info: Record<string, unknown>, expand: string[]): Record<string, unknown> {
  if (expand.length === 0) return info;
  const out: Record<string, unknown> = { _id: info['_id'], id: info['id'] };
  for (const key of expand) if (key in info) out[key] = info[key];
  return out;
}

function isTrue(v: string | null): boolean {
  return v !== null && /^(1|true)$/i.test(v);
}

async function readPaths(ex: Exchange): Promise<string[] | undefined> {
  const body = (await readBody(ex.req, 1 << 20)).toString('utf8');
  const type = ex.req.headers['content-type'] ?? '';
  if (type.includes('application/x-www-form-urlencoded')) return new URLSearchParams(body).getAll('paths');
  try {
    const parsed: unknown = JSON.parse(body);
    if (typeof parsed !== 'object' || parsed === null || !('paths' in parsed)) return undefined;
    const paths: unknown = parsed.paths;
    if (typeof paths === 'string') return [paths];
    return Array.isArray(paths) && paths.every((p) => typeof p === 'string') ? paths : undefined;
  } catch {
    return undefined;
  }
}

function sendTreePage(ex: Exchange, entries: TreeEntry[], pageSize: number, lies: MetadataLies): void {
  const cursor = ex.url.searchParams.get('cursor');
  const offset = cursor === null ? 0 : Number(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!Number.isInteger(offset) || offset < 0) return sendError(ex, { status: 400, message: 'Invalid cursor' });
  const page = entries.slice(offset, offset + pageSize);
  const headers: Record<string, string> = {};
  if (offset + pageSize < entries.length) {
    const next = new URL(ex.url.href);
    next.searchParams.set('cursor', Buffer.from(String(offset + pageSize)).toString('base64url'));
    headers['link'] = `<${next.href}>; rel="next"`;
  }
  sendJson(ex, 200, lies.answer(page), headers);
}

/** `segs`: decoded path segments after "/api". */
export async function handleApi(ex: Exchange, env: ApiEnv, segs: string[]): Promise<void> {
  const [kind, org, name, action, ...rest] = segs;
  const type: RepoType | undefined = kind === 'models' ? 'model' : kind === 'datasets' ? 'dataset' : undefined;
  if (type === undefined || org === undefined || name === undefined || org === '' || name === '') return notFoundPage(ex);
  if (action !== undefined && !['revision', 'tree', 'paths-info'].includes(action)) return notFoundPage(ex);
  const method = ex.req.method ?? 'GET';
  const wantMethod = action === 'paths-info' ? 'POST' : 'GET';
  if (method !== wantMethod && !(wantMethod === 'GET' && method === 'HEAD')) return methodNotAllowed(ex, wantMethod);

  const id = `${org}/${name}`;
  const repo = env.store.get(type, id);
  const denied = checkAccess(env.settings, ex.req, type, id, repo, 'api');
  if (denied || !repo) return sendError(ex, denied ?? { status: 404, code: 'RepoNotFound', message: 'Repository not found' });

  let rev = 'main';
  let path = '';
  if (action === 'revision' || action === 'paths-info') rev = rest.join('/');
  if (action === 'tree') {
    const split = env.store.splitRevision(repo, rest);
    rev = split.rev;
    path = split.rest.join('/').replace(/\/+$/, '');
  }
  const commit = env.store.commitFor(repo, rev);
  if (!commit) return sendError(ex, { status: 404, code: 'RevisionNotFound', message: `Invalid rev id: ${rev}` });
  const commitHeader = { 'x-repo-commit': commit.sha };

  if (action === undefined || action === 'revision') {
    const q = ex.url.searchParams;
    return sendJson(ex, 200, applyExpand(repoInfo(repo, commit, isTrue(q.get('blobs')), env.lies), q.getAll('expand')), commitHeader);
  }
  if (action === 'tree') {
    const entries = treeEntries(commit, path, isTrue(ex.url.searchParams.get('recursive')));
    if (!entries) return sendError(ex, { status: 404, code: 'EntryNotFound', message: 'Entry not found', headers: commitHeader });
    return sendTreePage(ex, entries, env.settings.treePageSize, env.lies);
  }
  const paths = await readPaths(ex);
  if (!paths) return sendError(ex, { status: 400, message: 'Invalid body: expected {"paths": [...]} or paths=...' });
  const found = paths.map((p) => entryAt(commit, p.replace(/^\/+|\/+$/g, ''))).filter((e): e is TreeEntry => e !== undefined);
  return sendJson(ex, 200, env.lies.answer(found), commitHeader);
}
