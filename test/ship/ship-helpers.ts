import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function repoPath(...parts: string[]): string {
  return path.join(REPO_ROOT, ...parts);
}

/**
 * Model folders ComfyUI itself defines in folder_paths.py (folder_names_and_paths), plus the
 * on-disk legacy names it still searches: clip (-> text_encoders), unet (-> diffusion_models)
 * and t2i_adapter (searched for controlnet). Custom-node folders are deliberately absent: the
 * example manifests must work on a stock ComfyUI.
 */
export const COMFY_MODEL_FOLDERS: readonly string[] = [
  'checkpoints',
  'configs',
  'loras',
  'vae',
  'vae_approx',
  'text_encoders',
  'clip',
  'diffusion_models',
  'unet',
  'clip_vision',
  'style_models',
  'embeddings',
  'diffusers',
  'controlnet',
  't2i_adapter',
  'gligen',
  'upscale_models',
  'latent_upscale_models',
  'hypernetworks',
  'photomaker',
  'classifiers',
  'model_patches',
  'audio_encoders',
];

/** Extensions ComfyUI lists in its model folders (supported_pt_extensions). */
export const COMFY_MODEL_EXTENSIONS: readonly string[] = ['.ckpt', '.pt', '.bin', '.pth', '.safetensors', '.pkl', '.sft'];

/** Formats that load through Python pickle and so need `allow_pickle: true`. */
export const PICKLE_EXTENSIONS: readonly string[] = ['.ckpt', '.pt', '.pth', '.bin', '.pkl'];

/** Every example manifest, as absolute paths. */
export function manifestFiles(): string[] {
  const dir = repoPath('manifests');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml') || f.endsWith('.json'))
    .sort()
    .map((f) => path.join(dir, f));
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function asRecord(v: unknown, what: string): Record<string, unknown> {
  if (!isRecord(v)) throw new Error(`${what}: expected a mapping, got ${JSON.stringify(v)}`);
  return v;
}

export function asArray(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what}: expected a list, got ${JSON.stringify(v)}`);
  return v;
}

export function asString(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new Error(`${what}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

/** `a.b.c` lookup through mappings; undefined when any step is missing. */
export function dig(v: unknown, ...keys: string[]): unknown {
  let cur: unknown = v;
  for (const k of keys) {
    if (!isRecord(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

const ENTRY_FIELDS = new Set(['source', 'dest', 'sha256', 'size', 'allow_pickle', 'required']);
const HF_URI = /^hf:\/\/(datasets\/)?[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*(@[^/]+)?\/[^/].*$/;

/**
 * Problems with a parsed manifest v1, judged from the raw document alone (independent of
 * src/): the design's rules plus the ones the examples hold themselves to (known ComfyUI
 * folders only, a model-file extension, at least one required entry).
 */
export function manifestProblems(doc: unknown): string[] {
  const out: string[] = [];
  if (!isRecord(doc)) return ['the document is not a mapping'];
  if (doc.version !== 1) out.push(`version is ${JSON.stringify(doc.version)}, expected 1`);
  for (const k of Object.keys(doc)) {
    if (!['version', 'models'].includes(k)) out.push(`unexpected top-level field "${k}"`);
  }
  if (!Array.isArray(doc.models) || doc.models.length === 0) {
    out.push('models must be a non-empty list');
    return out;
  }
  const dests = new Set<string>();
  let required = 0;
  doc.models.forEach((raw: unknown, i: number) => {
    const at = `models[${i}]`;
    if (!isRecord(raw)) {
      out.push(`${at} is not a mapping`);
      return;
    }
    for (const k of Object.keys(raw)) if (!ENTRY_FIELDS.has(k)) out.push(`${at}: unknown field "${k}"`);
    const { source, dest, sha256, size, allow_pickle: allowPickle } = raw;
    if (typeof source !== 'string') {
      out.push(`${at}.source missing`);
    } else if (source.startsWith('hf://')) {
      if (!HF_URI.test(source)) out.push(`${at}.source is not hf://[datasets/]ORG/NAME[@REV]/PATH: ${source}`);
    } else if (source.startsWith('https://') || source.startsWith('s3://')) {
      if (sha256 === undefined) out.push(`${at}: ${source.split(':')[0]}:// sources need a sha256`);
    } else {
      out.push(`${at}.source has an unsupported scheme: ${source}`);
    }
    if (sha256 !== undefined && !(typeof sha256 === 'string' && /^[0-9a-f]{64}$/i.test(sha256))) out.push(`${at}.sha256 is not 64 hex digits`);
    if (size !== undefined && !(typeof size === 'number' && Number.isInteger(size) && size >= 0)) out.push(`${at}.size is not a byte count`);
    if (raw.required !== undefined && typeof raw.required !== 'boolean') out.push(`${at}.required is not a boolean`);
    if (allowPickle !== undefined && typeof allowPickle !== 'boolean') out.push(`${at}.allow_pickle is not a boolean`);
    if (raw.required !== false) required++;
    if (typeof dest !== 'string') {
      out.push(`${at}.dest missing`);
      return;
    }
    const segs = dest.split('/');
    if (dest.startsWith('/') || segs.includes('..') || segs.includes('') || segs.length < 2) out.push(`${at}.dest is not a safe FOLDER/FILE path: ${dest}`);
    const top = segs[0] ?? '';
    if (!COMFY_MODEL_FOLDERS.includes(top)) out.push(`${at}.dest top folder "${top}" is not a ComfyUI model folder`);
    const ext = path.posix.extname(dest).toLowerCase();
    if (!COMFY_MODEL_EXTENSIONS.includes(ext)) out.push(`${at}.dest has extension "${ext}", which ComfyUI does not list`);
    if (PICKLE_EXTENSIONS.includes(ext) && allowPickle !== true) out.push(`${at}: ${ext} loads through pickle and needs allow_pickle: true`);
    if (allowPickle === true && !PICKLE_EXTENSIONS.includes(ext)) out.push(`${at}: allow_pickle set on a non-pickle file (${dest})`);
    if (dests.has(dest)) out.push(`${at}.dest ${dest} appears twice`);
    dests.add(dest);
  });
  if (required === 0) out.push('no required entry: ComfyUI would start with nothing');
  return out;
}
