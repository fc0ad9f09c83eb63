/** ComfyUI's model folders (folder_paths.py), plus ones popular custom nodes use. */
export const COMFY_FOLDERS: readonly string[] = [
  'checkpoints', 'configs', 'loras', 'vae', 'vae_approx', 'text_encoders', 'clip', 'clip_vision',
  'diffusion_models', 'unet', 'controlnet', 't2i_adapter', 'style_models', 'embeddings', 'diffusers',
  'gligen', 'upscale_models', 'latent_upscale_models', 'hypernetworks', 'photomaker', 'classifiers',
  'model_patches', 'audio_encoders', 'ipadapter', 'instantid', 'insightface', 'facerestore_models',
  'sams', 'ultralytics', 'animatediff_models', 'animatediff_motion_lora', 'LLM', 'onnx',
];

const MAX_SEGMENT_BYTES = 255;
const MAX_DEST_BYTES = 1024;

/**
 * Why a `dest` is unsafe, or undefined when it is fine. A dest is a relative, "/"-separated path
 * that cannot leave the models dir on any OS (Windows forms are refused too, because manifests
 * travel between machines) nor reach a dot-named file or folder in it: the store, when it is in
 * the models dir, is only ever in one (config-roots.ts refuses any other place).
 */
export function destProblem(dest: string, extraFolders: readonly string[]): string | undefined {
  if (dest === '') return 'is empty';
  if (dest.includes('\0')) return 'contains a NUL byte';
  if (dest.includes('\\')) return 'contains a backslash (use "/")';
  if (dest.startsWith('/')) return 'is absolute (must be relative to the models dir)';
  if (/^[A-Za-z]:/.test(dest)) return 'is a Windows drive path';
  if (Buffer.byteLength(dest) > MAX_DEST_BYTES) return `is longer than ${MAX_DEST_BYTES} bytes`;
  const segs = dest.split('/');
  for (const s of segs) {
    if (s === '..') return 'contains ".."';
    if (s === '' || s === '.') return 'has an empty or "." segment';
    // The store (.modelsync-store), publish temps (.NAME.modelsync-*) and ComfyUI's own hidden
    // files live under dot names: no dest may reach one, whatever the store is called.
    if (s.startsWith('.')) return `has a name starting with "." (${JSON.stringify(s.slice(0, 40))}): dot names are reserved (the store lives in one)`;
    // Windows drops trailing dots and spaces: " .." or " " would name the folder itself there.
    if (/^[. ]+$/.test(s)) return `has a name of only spaces and dots (${JSON.stringify(s.slice(0, 40))})`;
    if (Buffer.byteLength(s) > MAX_SEGMENT_BYTES) return `has a name longer than ${MAX_SEGMENT_BYTES} bytes`;
    // eslint-disable-next-line no-control-regex -- control characters are exactly what we refuse
    if (/[\x00-\x1f]/.test(s)) return 'contains a control character';
  }
  if (segs.length < 2) return 'must be FOLDER/FILE, e.g. checkpoints/model.safetensors';
  const top = segs[0] ?? '';
  if (!COMFY_FOLDERS.includes(top) && !extraFolders.includes(top)) {
    return `unknown top folder "${top}" (ComfyUI folders: ${COMFY_FOLDERS.slice(0, 12).join(', ')}, ...; add custom ones under "folders:")`;
  }
  return undefined;
}

/**
 * FOLDER/FILE of plain names: nothing that could point outside the models dir or at a hidden name
 * (the store among them). destProblem's shape without its folder list: for a dest read back from
 * the state DB or a manifest cache, checked again where it becomes a path.
 */
export function plainDest(dest: unknown): dest is string {
  if (typeof dest !== 'string') return false;
  const segs = dest.split('/');
  return segs.length >= 2 && !segs.some((s) => s === '' || s.startsWith('.') || s.includes('\0') || s.includes('\\'));
}

/** Formats ComfyUI loads through pickle, which can run arbitrary code. */
export function isPickleFormat(name: string): boolean {
  return /\.(ckpt|pt|pth|bin|pkl|pickle)$/i.test(name);
}

/**
 * Why a file name (a manifest's `file:`, a name Civitai gives) cannot be one segment of a dest:
 * it must name a file, never a path.
 */
export function fileNameProblem(name: string): string | undefined {
  if (name === '' || name === '.' || name === '..') return 'is not a file name';
  if (name.includes('/') || name.includes('\\')) return 'contains a path separator';
  if (name.startsWith('.')) return 'starts with "." (a hidden file)';
  if (Buffer.byteLength(name) > MAX_SEGMENT_BYTES) return `is longer than ${MAX_SEGMENT_BYTES} bytes`;
  // eslint-disable-next-line no-control-regex -- control characters are exactly what we refuse
  if (/[\x00-\x1f\x7f]/.test(name)) return 'contains a control character';
  return undefined;
}
