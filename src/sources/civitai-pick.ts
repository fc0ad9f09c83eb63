import { ModelsyncError } from '../errors.js';
import type { CivitaiRef } from '../manifest/types.js';
import { short, type CivitaiFile, type CivitaiVersion } from './civitai-version.js';

/** ComfyUI's folder for a model type (Civitai's `model.type`), where a derived dest goes. */
const FOLDER_BY_MODEL_TYPE: Readonly<Record<string, string>> = {
  Checkpoint: 'checkpoints',
  LORA: 'loras',
  LoCon: 'loras',
  DoRA: 'loras',
  TextualInversion: 'embeddings',
  VAE: 'vae',
  Controlnet: 'controlnet',
  Upscaler: 'upscale_models',
  Hypernetwork: 'hypernetworks',
  MotionModule: 'animatediff_models',
};

/** A file whose own type says where it goes, whatever the model is (a checkpoint's baked VAE). */
const FOLDER_BY_FILE_TYPE: Readonly<Record<string, string>> = {
  VAE: 'vae',
  Config: 'configs',
  Negative: 'embeddings',
};

/** Files of these types are the model itself: they go where the model type says. */
const MODEL_FILES = new Set(['Model', 'Pruned Model']);

/**
 * The file of a version an entry means: the one named by `file:`, else the primary among those
 * matching the source's type/format/size/fp (the download URL's parameters), else the first
 * of them. Fails naming what there is, when nothing matches.
 */
export function pickFile(v: CivitaiVersion, ref: CivitaiRef, fileName: string | undefined): CivitaiFile | ModelsyncError {
  const ctx = { url: ref.uri };
  if (fileName !== undefined) {
    const f = v.files.find((x) => x.name === fileName);
    return f ?? new ModelsyncError('E_NOT_FOUND', `Civitai version ${v.id} has no file ${short(fileName)} (it has ${list(v.files)})`, ctx);
  }
  const q = ref.query;
  const matching = v.files.filter((f) => (q.type === undefined || f.type === q.type) && (q.format === undefined || f.format === q.format) && (q.size === undefined || f.size === q.size) && (q.fp === undefined || f.fp === q.fp));
  const anyQuery = q.type !== undefined || q.format !== undefined || q.size !== undefined || q.fp !== undefined;
  // Without parameters the site serves the primary file; failing that, a model file.
  const f = matching.find((x) => x.primary) ?? (anyQuery ? undefined : matching.find((x) => MODEL_FILES.has(x.type))) ?? matching[0];
  if (f !== undefined) return f;
  const wanted = Object.entries(q).map(([k, val]) => `${k}=${String(val)}`).join(', ');
  return new ModelsyncError('E_NOT_FOUND', `Civitai version ${v.id} has no file${wanted ? ` with ${wanted}` : ''} (it has ${list(v.files)})`, ctx);
}

/** `FOLDER/NAME` for a civitai entry written without dest, or why there is none. */
export function derivedDest(v: CivitaiVersion, f: CivitaiFile, ref: CivitaiRef): string | ModelsyncError {
  if (f.nameProblem !== undefined) {
    return new ModelsyncError('E_PATH_UNSAFE', `Civitai names the file ${short(f.name)}, which ${f.nameProblem}: it cannot be a file name; write a dest for this entry`, { url: ref.uri });
  }
  const folder = FOLDER_BY_FILE_TYPE[f.type] ?? (MODEL_FILES.has(f.type) ? FOLDER_BY_MODEL_TYPE[v.modelType] : undefined);
  if (folder === undefined) {
    const what = MODEL_FILES.has(f.type) ? `Civitai model type ${short(v.modelType)}` : `a Civitai file of type ${short(f.type)}`;
    return new ModelsyncError('E_MANIFEST', `${what} has no ComfyUI folder modelsync knows: write a dest for this entry (e.g. dest: FOLDER/${f.name})`, { url: ref.uri });
  }
  return `${folder}/${f.name}`;
}

function list(files: readonly CivitaiFile[]): string {
  if (files.length === 0) return 'no files';
  const shown = files.slice(0, 5).map((f) => `${short(f.name)} (${[f.type, f.format, f.size, f.fp].filter((x) => x !== undefined).join(' ')})`);
  return files.length > 5 ? `${shown.join(', ')} and ${files.length - 5} more` : shown.join(', ');
}
