import * as z from 'zod';
import { ModelsyncError, type ErrorCode } from '../errors.js';
import { checkEntry, duplicateDests, sameContent } from '../manifest/entry.js';
import { hubFileUri, parseHubUrl } from '../manifest/hub-url.js';
import { allowingGlob } from '../manifest/policy.js';
import { EntrySchema } from '../manifest/schema.js';
import type { Entry, Manifest, SourceRef, UnplacedEntry } from '../manifest/types.js';

/** More than a workflow ever names; a request beyond it is refused before any is looked at. */
export const MAX_MODELS_PER_REQUEST = 256;
/** Longest source URI or URL taken from a request. */
const MAX_SOURCE_CHARS = 4096;

/** A manifest entry as a request carries it: `required` means nothing here. */
const EntryRequestSchema = EntrySchema.omit({ required: true });

/** The model list ComfyUI embeds in workflows (its frontend's ModelFile). */
const WorkflowModelSchema = z.strictObject({
  name: z.string().min(1),
  url: z.string().min(1),
  directory: z.string().min(1),
  hash: z.string().optional(),
  hash_type: z.string().optional(),
});

/** One request, validated and allowed. */
export interface Normalised {
  /** `index`: the request's position; `source.uri`: for hf://, the normalised form. */
  readonly entry: Entry;
  /**
   * Its identity, what the policy matched and what the layer records: hf://ORG/NAME@REV/PATH,
   * s3://BUCKET/KEY, an URL's origin and path, Civitai's download URL with the file it picks.
   */
  readonly uri: string;
  /** An https:// or s3:// request without a sha256: its first download decides its content. */
  readonly tofu: boolean;
  /** The manifest also has this dest, with this content: the manifest's, never evicted. */
  readonly manifestDest: boolean;
}

/** A request checked and allowed, its dest maybe still Civitai's to name (`unplaced`). */
export interface Checked {
  readonly index: number;
  readonly uri: string;
  readonly tofu: boolean;
  readonly entry: Entry | undefined;
  readonly unplaced: UnplacedEntry | undefined;
}

export interface NormaliseContext {
  readonly manifest: Manifest;
  /** HF_ENDPOINT: resolve URLs under it are Hub URLs too. */
  readonly hfEndpoint: string;
}

/**
 * Every request checked as a manifest entry would be (same validators, same codes), then against
 * the manifest's `on_demand` policy. All or nothing: the first refused request is thrown, tagged
 * with its index and dest. A civitai request may leave its dest to Civitai's metadata
 * (`unplaced`): the service places it (sync/place.ts, the manifest's own rules), then
 * settleRequests checks it with the rest.
 */
export function checkRequests(requests: readonly unknown[], ctx: NormaliseContext): Checked[] {
  if (requests.length === 0) throw new ModelsyncError('E_USAGE', 'no models in the request');
  if (requests.length > MAX_MODELS_PER_REQUEST) throw new ModelsyncError('E_USAGE', `${requests.length} models in one request; at most ${MAX_MODELS_PER_REQUEST}`);
  return requests.map((r, i) => checkOne(r, i, ctx));
}

/**
 * The checks across requests, once every dest is known (`placed`: the dests Civitai named):
 * one dest twice with other content, a manifest entry's dest with other content.
 */
export function settleRequests(checked: readonly Checked[], placed: ReadonlyMap<number, Entry>, manifest: Manifest): Normalised[] {
  const out = checked.map((c): Normalised => {
    const entry = c.entry ?? placed.get(c.index);
    if (!entry) throw refusal('E_MANIFEST', { index: c.index, dest: undefined }, 'dest: none given, and none derived from Civitai');
    const theirs = manifest.entries.find((m) => m.dest === entry.dest);
    if (theirs && !sameContent(theirs, entry) && !sameHubFile(theirs, entry)) {
      throw refusal('E_MANIFEST', entry, `dest: the manifest's models[${theirs.index}] has this dest with different content`);
    }
    return { entry, uri: c.uri, tofu: c.tofu, manifestDest: theirs !== undefined };
  });
  for (const { entry, first } of duplicateDests(out.map((n) => n.entry))) {
    throw refusal('E_MANIFEST', entry, `dest: same dest as models[${first.index}] with different content`);
  }
  return out;
}

/** checkRequests and settleRequests, for requests that all name their dest. */
export function normaliseRequests(requests: readonly unknown[], ctx: NormaliseContext): Normalised[] {
  return settleRequests(checkRequests(requests, ctx), new Map(), ctx.manifest);
}

function checkOne(raw: unknown, index: number, ctx: NormaliseContext): Checked {
  const where = (dest: string | undefined): ErrorTag => ({ index, dest });
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw refusal('E_MANIFEST', where(undefined), 'must be an object: a manifest entry {source, dest, ...} or a workflow model {name, url, directory, ...}');
  const obj = raw as Record<string, unknown>;
  const workflow = !('source' in obj) && ('url' in obj || 'name' in obj || 'directory' in obj);
  const input = workflow ? fromWorkflowModel(obj, index) : fromEntry(obj, index);
  if (input.source.length > MAX_SOURCE_CHARS) throw refusal('E_MANIFEST', where(input.dest), `source: longer than ${MAX_SOURCE_CHARS} characters`);
  const source = hubSource(input.source, ctx.hfEndpoint, where(input.dest));
  const checked = checkEntry({ ...input, source }, index, { folders: ctx.manifest.folders, requireHashes: false });
  const base = checked.entry ?? checked.unplaced;
  if (checked.problems.length > 0 || !base) throw refusal('E_MANIFEST', where(input.dest), checked.problems.map((p) => `${p.field}: ${p.message}`).join('; '));
  const policy = ctx.manifest.onDemand;
  if (!policy) throw refusal('E_POLICY', where(input.dest), 'on-demand fetching is off: the manifest has no on_demand policy');
  const uris = matchUris(base.source, where(input.dest));
  // A Civitai version's files: which one is part of what the request names.
  if (base.source.kind === 'civitai' && base.file !== undefined) uris[0] = `${uris[0] ?? ''}#file=${encodeURIComponent(base.file)}`;
  const uri = uris[0] as string;
  if (!uris.some((u) => allowingGlob(policy, u) !== undefined)) throw refusal('E_POLICY', where(input.dest), `${uri} is not allowed by on_demand.allow`);
  const tofu = (base.source.kind === 'https' || base.source.kind === 's3') && base.sha256 === undefined;
  if (tofu && policy.requireSha256) throw refusal('E_POLICY', where(input.dest), `on_demand.require_sha256 is set: a ${base.source.kind}:// request must carry a sha256`);
  const entry = checked.entry && checked.entry.source.kind === 'hf' ? { ...checked.entry, source: { ...checked.entry.source, uri } } : checked.entry;
  return { index, uri, tofu, entry, unplaced: checked.entry ? undefined : checked.unplaced };
}

/** A manifest-entry-shaped request. */
function fromEntry(obj: Record<string, unknown>, index: number): z.infer<typeof EntryRequestSchema> {
  const parsed = EntryRequestSchema.safeParse(obj);
  if (!parsed.success) throw refusal('E_MANIFEST', { index, dest: typeof obj.dest === 'string' ? obj.dest : undefined }, zodText(parsed.error));
  return parsed.data;
}

/** A workflow model: published at directory/name; `hash` counts when `hash_type` says sha256. */
function fromWorkflowModel(obj: Record<string, unknown>, index: number): z.infer<typeof EntryRequestSchema> {
  const parsed = WorkflowModelSchema.safeParse(obj);
  const dest = typeof obj.directory === 'string' && typeof obj.name === 'string' ? `${obj.directory}/${obj.name}` : undefined;
  if (!parsed.success) throw refusal('E_MANIFEST', { index, dest }, zodText(parsed.error));
  const m = parsed.data;
  const sha = m.hash !== undefined && /^sha-?256$/i.test(m.hash_type ?? '');
  if (sha && !/^[0-9a-fA-F]{64}$/.test(m.hash ?? '')) throw refusal('E_MANIFEST', { index, dest }, 'hash: must be 64 hex characters when hash_type is sha256');
  return { source: m.url, dest: `${m.directory}/${m.name}`, ...(sha ? { sha256: m.hash } : {}) };
}

/** A Hub web URL becomes the hf:// source it names; anything else is left to the URI parser. */
function hubSource(source: string, endpoint: string, tag: ErrorTag): string {
  const f = parseHubUrl(source, endpoint);
  if (f === undefined) return source;
  if ('error' in f) throw refusal('E_MANIFEST', tag, `source: ${f.error}`);
  return hubFileUri(f, true);
}

/**
 * The forms a policy glob is matched against, the first also the request's identity. Refused
 * here: what a glob and the server could read differently (an encoded "/" in an URL path, "." or
 * ".." in an S3 key, which some S3-compatible servers resolve). A Civitai version, in any of the
 * forms it is written (civitai://, an AIR, a page or download URL), is its download URL on
 * civitai.com (so `https://civitai.com/*` allows it) and `civitai://VERSION`.
 */
function matchUris(s: SourceRef, tag: ErrorTag): string[] {
  if (s.kind === 'hf') return [hubFileUri({ repoType: s.repoType, repo: s.repo, revision: s.revision, path: s.path }, true)];
  if (s.kind === 's3') {
    if (s.key.split('/').some((seg) => seg === '' || seg === '.' || seg === '..')) throw refusal('E_POLICY', tag, `${s.uri}: an S3 key with an empty, "." or ".." segment is not matched against on_demand.allow`);
    // eslint-disable-next-line no-control-regex -- control characters are exactly what we refuse
    if (/[\x00-\x1f\x7f]/.test(s.key)) throw refusal('E_POLICY', tag, `${s.uri}: an S3 key with a control character is not matched against on_demand.allow`);
    return [s.uri];
  }
  if (s.kind === 'civitai') {
    const q = new URLSearchParams();
    for (const k of ['type', 'format', 'size', 'fp'] as const) if (s.query[k] !== undefined) q.set(k, s.query[k]);
    const download = `https://civitai.com/api/download/models/${s.versionId}`;
    return [`${download}${q.size > 0 ? `?${q.toString()}` : ''}`, download, `civitai://${s.versionId}`];
  }
  const u = new URL(s.url);
  if (/%(2f|5c)/i.test(u.pathname)) throw refusal('E_POLICY', tag, `${u.origin}${u.pathname}: an encoded "/" or "\\" in the path is not matched against on_demand.allow`);
  return [`${u.origin}${u.pathname}`];
}

/** One Hub file, written with or without its default revision. */
function sameHubFile(a: Entry, b: Entry): boolean {
  const [s, t] = [a.source, b.source];
  const hashes = a.sha256 === undefined || b.sha256 === undefined || a.sha256 === b.sha256;
  return hashes && s.kind === 'hf' && t.kind === 'hf' && s.repoType === t.repoType && s.repo === t.repo && s.revision === t.revision && s.path === t.path;
}

interface ErrorTag {
  readonly index: number;
  readonly dest: string | undefined;
}

function refusal(code: ErrorCode, tag: ErrorTag | Entry, message: string): ModelsyncError {
  const dest = tag.dest;
  return new ModelsyncError(code, `models[${tag.index}]${dest === undefined ? '' : ` (${clip(dest)})`}: ${message}`, { entry: tag.index, dest });
}

function zodText(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => {
      const field = i.path.map(String).join('.');
      if (i.code === 'unrecognized_keys') return i.keys.slice(0, 5).map((k) => `${clip(k)}: unknown field`).join('; ');
      return `${field || '(entry)'}: ${i.message}`;
    })
    .join('; ');
}

/** Text from a request in a message: bounded, and quoted where it could hold anything. */
function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}...` : s;
}
