import { workflowModels } from '../comfy/workflow-models.js';
import { ModelsyncError } from '../errors.js';
import { destProblem } from '../manifest/dest.js';
import { parseSourceUri } from '../manifest/source-uri.js';
import { readBounded } from '../read-bounded.js';
import { urlRequest, type ModelRequest } from '../gate/model-url.js';
import { readPrompt } from '../gate/prompt-models.js';

/** Bigger than any workflow ComfyUI saves (they are kilobytes to a few megabytes). */
const MAX_WORKFLOW_BYTES = 64 * 1024 * 1024;
/** The daemon takes at most this many models per request (ondemand/normalise.ts). */
const MAX_MODELS = 256;

/** A request as POST /models takes it: a manifest entry or a workflow model. */
export type EnsureRequest =
  | { readonly source: string; readonly dest?: string; readonly sha256?: string }
  | { readonly name: string; readonly url: string; readonly directory: string; readonly hash?: string; readonly hash_type?: string };

const SHA_SUFFIX = /#sha256:([^#]*)$/i;

/**
 * One ENTRY of `modelsync ensure`, as a request:
 * - `SOURCE=FOLDER/FILE`: published there (`hf://org/repo/x.safetensors=loras/x.safetensors`);
 * - `SOURCE=FOLDER/`: named after the source's last path segment (a Civitai version:
 *   `civitai-VERSION.safetensors`), as the gate names a URL in a loader input;
 * - a Civitai version alone (`civitai://123`, `urn:air:...`, its download or page URL): the
 *   name Civitai gives, as in the manifest;
 * - any of them followed by `#sha256:HEX`: the content it must have.
 * DEST is what follows the last `=` when that is a path (has a `/`, no `?`, `&` or `=`), so a
 * URL's own query (`?type=Model`) stays in the source. What can be checked here is (the source
 * URI, the dest's form, the hash); the folder and the policy are the daemon's (its manifest).
 */
export function entryRequest(arg: string): EnsureRequest {
  let rest = arg.trim();
  let sha256: string | undefined;
  const sha = SHA_SUFFIX.exec(rest);
  if (sha) {
    sha256 = (sha[1] ?? '').toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw usage(arg, 'the sha256 after "#sha256:" must be 64 hex characters');
    rest = rest.slice(0, sha.index);
  }
  const eq = rest.lastIndexOf('=');
  const tail = eq < 0 ? '' : rest.slice(eq + 1);
  const hasDest = eq > 0 && tail.includes('/') && !/[?&=]/.test(tail);
  const source = hasDest ? rest.slice(0, eq) : rest;
  const dest = hasDest ? tail : undefined;
  if (source === '') throw usage(arg, 'no source before "="');
  const parsed = parseSourceUri(source);
  if ('error' in parsed) throw usage(arg, `source: ${parsed.error}`);
  const hash = sha256 === undefined ? {} : { sha256 };
  if (dest === undefined) {
    if (parsed.kind !== 'civitai') throw usage(arg, 'needs =DEST: FOLDER/FILE, or FOLDER/ to keep the source\'s file name (only a Civitai version names its own file)');
    return { source, ...hash };
  }
  if (dest.endsWith('/')) {
    const folder = dest.slice(0, -1);
    const bad = destProblem(`${folder}/x`, [folder.split('/')[0] ?? '']);
    if (bad !== undefined) throw usage(arg, `dest: ${bad}`);
    const r = urlRequest(source, folder);
    if ('problem' in r) throw usage(arg, `the source ${r.problem}: write =FOLDER/FILE`);
    return withHash(r.request, sha256);
  }
  // The top folder is the daemon's manifest's to judge (its `folders:`); the rest of the form is checked here.
  const bad = destProblem(dest, [dest.split('/')[0] ?? '']);
  if (bad !== undefined) throw usage(arg, `dest: ${bad}`);
  return { source, dest, ...hash };
}

function withHash(r: ModelRequest, sha256: string | undefined): EnsureRequest {
  if (sha256 === undefined) return r;
  return 'url' in r ? { ...r, hash: sha256, hash_type: 'sha256' } : { ...r, sha256 };
}

/**
 * The models a workflow file asks for: a workflow as ComfyUI saves it (its `models[]` and every
 * node's `properties.models[]`, subgraphs included), or a POST /prompt body or an API-format
 * prompt, read as the gate reads one (loader inputs whose value is a URL, and the declared models
 * a node uses).
 */
export async function workflowRequests(file: string): Promise<EnsureRequest[]> {
  let text: string;
  try {
    text = await readBounded(file, MAX_WORKFLOW_BYTES, () => new ModelsyncError('E_USAGE', `--workflow ${file}: larger than ${MAX_WORKFLOW_BYTES} bytes: not a workflow`));
  } catch (e) {
    if (e instanceof ModelsyncError) throw e;
    throw new ModelsyncError('E_USAGE', `--workflow ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ModelsyncError('E_USAGE', `--workflow ${file}: not JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isObject(json)) throw new ModelsyncError('E_USAGE', `--workflow ${file}: not a ComfyUI workflow (a JSON object)`);
  const asPrompt = isObject(json.prompt) ? text : isApiPrompt(json) ? JSON.stringify({ prompt: json }) : undefined;
  if (asPrompt === undefined) return workflowModels(json).map(fromWorkflowModel);
  const read = readPrompt(asPrompt, MAX_MODELS);
  if (read.kind === 'invalid') throw new ModelsyncError('E_USAGE', `--workflow ${file}: ${read.message}`);
  if (read.kind === 'relay') return [];
  const out: EnsureRequest[] = [];
  for (const u of read.urlInputs) {
    if (u.request === undefined) throw new ModelsyncError('E_USAGE', `--workflow ${file}: node ${u.nodeId} (${u.classType}) input ${u.input}: the URL ${u.problem ?? 'cannot be used'}`);
    out.push(u.request);
  }
  for (const d of read.declared) out.push(fromWorkflowModel(d.model));
  return out;
}

function fromWorkflowModel(m: { name: string; url: string; directory: string; hash?: string | undefined; hashType?: string | undefined }): EnsureRequest {
  return { name: m.name, url: m.url, directory: m.directory, ...(m.hash === undefined ? {} : { hash: m.hash }), ...(m.hashType === undefined ? {} : { hash_type: m.hashType }) };
}

/** "Export (API)": node ids mapping to `{class_type, inputs}`. */
function isApiPrompt(v: Record<string, unknown>): boolean {
  const nodes = Object.values(v);
  return nodes.length > 0 && nodes.every((n) => isObject(n) && typeof n.class_type === 'string');
}

/** ENTRY arguments and --workflow together, in that order; at least one model. */
export async function ensureRequests(args: readonly string[], workflow: string | undefined): Promise<EnsureRequest[]> {
  if (args.length === 0 && workflow === undefined) throw new ModelsyncError('E_USAGE', 'nothing to ensure: give ENTRY... or --workflow FILE (see modelsync ensure --help)');
  const out = args.map(entryRequest);
  if (workflow !== undefined) out.push(...(await workflowRequests(workflow)));
  if (out.length > MAX_MODELS) throw new ModelsyncError('E_USAGE', `${out.length} models; the daemon takes at most ${MAX_MODELS} at once`);
  return out;
}

function usage(arg: string, why: string): ModelsyncError {
  // A signed URL's query is a credential: never echoed.
  const plain = arg.includes('?') ? `${arg.slice(0, arg.indexOf('?'))}?<redacted>` : arg;
  const shown = plain.length > 200 ? `${plain.slice(0, 200)}...` : plain;
  return new ModelsyncError('E_USAGE', `ENTRY ${JSON.stringify(shown)}: ${why}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
