import { workflowModels, type WorkflowModel } from '../comfy/workflow-models.js';
import { scanJson } from './json-splice.js';
import { loaderFolder } from './loader-inputs.js';
import { isModelUrl, urlRequest, type ModelRequest } from './model-url.js';

/** Deeper than any prompt ComfyUI's frontend sends (subgraphs nest a few levels). */
export const MAX_PROMPT_DEPTH = 128;
/** Longer than any download URL a person or a frontend writes. */
const MAX_URL_LENGTH = 4096;

/** A node input of the API-format prompt. */
export interface NodeInput {
  readonly nodeId: string;
  readonly classType: string;
  readonly input: string;
}

/** A loader input whose value is a URL: fetched, then rewritten to the local file name. */
export interface UrlInput extends NodeInput {
  readonly url: string;
  readonly folder: string;
  /** What to ask the service for, or why the URL cannot be used. */
  readonly request: ModelRequest | undefined;
  readonly problem: string | undefined;
}

/** A model the workflow declares (its `models[]`, a node's `properties.models[]`) that a node of the prompt uses. */
export interface DeclaredModel {
  readonly model: WorkflowModel;
  /** The prompt's inputs whose value is its name. */
  readonly users: readonly NodeInput[];
}

export type PromptRead =
  /** Models to see to before the prompt may go on. */
  | { readonly kind: 'models'; readonly urlInputs: readonly UrlInput[]; readonly declared: readonly DeclaredModel[] }
  /** Nothing for the gate: relay the body as it came (ComfyUI judges it). */
  | { readonly kind: 'relay' }
  /** Refused before ComfyUI sees it. */
  | { readonly kind: 'invalid'; readonly type: string; readonly message: string };

interface ApiNode {
  class_type?: unknown;
  inputs?: unknown;
}

/**
 * What a POST /prompt body asks of the gate: every loader input whose value is a URL (only
 * loader inputs: a URL in a prompt's text or a custom node's image input is left alone), and
 * every model the workflow in `extra_data.extra_pnginfo.workflow` declares that one of the
 * prompt's inputs names. A declared model no input names (a bypassed node, a model listed for
 * another branch) is none of the gate's business.
 */
export function readPrompt(text: string, maxModels: number): PromptRead {
  if (scanJson(text).depth > MAX_PROMPT_DEPTH) return invalid('prompt_too_deep', `The prompt nests deeper than ${MAX_PROMPT_DEPTH} levels`);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return invalid('invalid_prompt', 'The prompt is not valid JSON');
  }
  if (!isObject(body) || !isObject(body.prompt)) return { kind: 'relay' };
  const urlInputs: UrlInput[] = [];
  const byValue = new Map<string, NodeInput[]>();
  for (const [nodeId, node] of Object.entries(body.prompt)) {
    if (!isObject(node)) continue;
    const n = node as ApiNode;
    if (typeof n.class_type !== 'string' || !isObject(n.inputs)) continue;
    for (const [input, value] of Object.entries(n.inputs)) {
      if (typeof value !== 'string') continue;
      const at: NodeInput = { nodeId, classType: n.class_type, input };
      if (!isModelUrl(value)) {
        const users = byValue.get(value) ?? [];
        users.push(at);
        byValue.set(value, users);
        continue;
      }
      const folder = loaderFolder(n.class_type, input);
      if (folder === undefined) continue;
      urlInputs.push(urlInput(at, value, folder));
    }
  }
  const extra = isObject(body.extra_data) ? body.extra_data : undefined;
  const pnginfo = extra && isObject(extra.extra_pnginfo) ? extra.extra_pnginfo : undefined;
  const declared: DeclaredModel[] = [];
  for (const model of workflowModels(pnginfo?.workflow)) {
    const users = byValue.get(model.name);
    if (users !== undefined) declared.push({ model, users });
  }
  const distinct = new Set(urlInputs.map((u) => `${u.folder}\n${u.url}`)).size + declared.length;
  if (distinct > maxModels) return invalid('prompt_too_many_models', `The prompt asks for ${distinct} models; the gate takes at most ${maxModels} (MODELSYNC_GATE_MAX_MODELS)`);
  if (urlInputs.length === 0 && declared.length === 0) return { kind: 'relay' };
  return { kind: 'models', urlInputs, declared };
}

function urlInput(at: NodeInput, url: string, folder: string): UrlInput {
  if (url.length > MAX_URL_LENGTH) return { ...at, url: `${url.slice(0, 80)}...`, folder, request: undefined, problem: `is longer than ${MAX_URL_LENGTH} characters` };
  const r = urlRequest(url, folder);
  return 'request' in r ? { ...at, url, folder, request: r.request, problem: undefined } : { ...at, url, folder, request: undefined, problem: r.problem };
}

function invalid(type: string, message: string): PromptRead {
  return { kind: 'invalid', type, message };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
