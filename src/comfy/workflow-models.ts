import { Document, YAMLSeq, type YAMLMap } from 'yaml';
import { isPickleFormat } from '../manifest/dest.js';
import { hubFileUri, parseHubUrl } from '../manifest/hub-url.js';

/** A model a ComfyUI workflow declares it needs (node `properties.models` or the top-level list). */
export interface WorkflowModel {
  readonly name: string;
  readonly url: string;
  readonly directory: string;
  readonly hash?: string | undefined;
  readonly hashType?: string | undefined;
}

interface RawModel {
  name?: unknown;
  url?: unknown;
  directory?: unknown;
  hash?: unknown;
  hash_type?: unknown;
}

/**
 * Collect the models a workflow embeds: the top-level `models` list, every node's
 * `properties.models`, and the same inside subgraph definitions. Duplicates (same directory and
 * name) are listed once.
 */
export function workflowModels(workflow: unknown): WorkflowModel[] {
  const found = new Map<string, WorkflowModel>();
  const add = (list: unknown): void => {
    if (!Array.isArray(list)) return;
    for (const m of list as RawModel[]) {
      if (typeof m?.name !== 'string' || typeof m.url !== 'string' || typeof m.directory !== 'string') continue;
      const k = `${m.directory}/${m.name}`;
      if (!found.has(k)) {
        found.set(k, { name: m.name, url: m.url, directory: m.directory, hash: typeof m.hash === 'string' ? m.hash : undefined, hashType: typeof m.hash_type === 'string' ? m.hash_type : undefined });
      }
    }
  };
  const visit = (wf: unknown): void => {
    if (wf === null || typeof wf !== 'object') return;
    const w = wf as { models?: unknown; nodes?: unknown; definitions?: { subgraphs?: unknown } };
    add(w.models);
    if (Array.isArray(w.nodes)) for (const n of w.nodes as { properties?: { models?: unknown } }[]) add(n?.properties?.models);
    if (Array.isArray(w.definitions?.subgraphs)) for (const sg of w.definitions.subgraphs) visit(sg);
  };
  visit(workflow);
  return [...found.values()];
}

/** https://huggingface.co/{repo}/resolve/{rev}/{path} -> hf://{repo}@{rev}/{path}; other URLs stay. */
export function sourceFromUrl(url: string): string {
  const f = parseHubUrl(url);
  return f === undefined || 'error' in f ? url : hubFileUri(f, false);
}

/**
 * Manifest YAML for a workflow's models. What a person must decide is left undecided, with a
 * comment: a missing sha256 for a non-Hub source, and pickle formats (allow_pickle is never set
 * on their behalf), so the result fails validation until they look.
 */
export function manifestYaml(models: readonly WorkflowModel[], origin: string): { yaml: string; warnings: string[] } {
  const warnings: string[] = [];
  const doc = new Document({ version: 1, models: [] as unknown[] });
  doc.commentBefore = ` Imported from ${origin} by modelsync import-workflow. Review before use.`;
  const seq = doc.get('models', true) as YAMLSeq;
  for (const m of models) {
    const source = sourceFromUrl(m.url);
    const entry: Record<string, unknown> = { source, dest: `${m.directory}/${m.name}` };
    const notes: string[] = [];
    if (m.hash && /^sha-?256$/i.test(m.hashType ?? 'sha256') && /^[0-9a-f]{64}$/i.test(m.hash)) entry.sha256 = m.hash.toLowerCase();
    else if (!source.startsWith('hf://')) notes.push('needs sha256: the workflow gives none (modelsync lock can compute it)');
    if (isPickleFormat(m.name)) notes.push('pickle format: add allow_pickle: true only if you trust this source');
    const node = doc.createNode(entry) as YAMLMap;
    if (notes.length > 0) {
      node.commentBefore = ` ${notes.join('; ')}`;
      warnings.push(`${m.directory}/${m.name}: ${notes.join('; ')}`);
    }
    seq.items.push(node);
  }
  return { yaml: doc.toString({ lineWidth: 0 }), warnings };
}
