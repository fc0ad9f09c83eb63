import { parseCivitai } from '../manifest/civitai-uri.js';

/**
 * A loader input whose value is a URL: what the gate asks the on-demand service for, and under
 * which file name it will appear in the input's folder.
 */

/** What ComfyUI lists as model files (folder_paths.supported_pt_extensions), plus GGUF. */
const MODEL_FILE = /\.(safetensors|sft|ckpt|pt|pt2|pth|bin|pkl|gguf)$/i;

const URL_VALUE = /^(hf|s3|https?|civitai):\/\/|^urn:air:/i;

/** Does this input value ask for a download rather than name a local file? */
export function isModelUrl(value: string): boolean {
  return URL_VALUE.test(value.trim());
}

/** A request in one of the two shapes the on-demand service takes. */
export type ModelRequest =
  | { readonly source: string; readonly dest?: string }
  | { readonly name: string; readonly url: string; readonly directory: string };

export type UrlRequest = { readonly request: ModelRequest } | { readonly problem: string };

/**
 * The request for a URL found in a loader input of `folder`:
 * - `hf://` and `s3://` URIs as manifest entries, published as `folder/<last path segment>`;
 * - a Civitai version (its download URL, `civitai://ID`, an AIR, a model page with
 *   `?modelVersionId=`) as that source, published as `folder/civitai-VERSION.safetensors`
 *   (`.gguf` for `format=GGUF`, `.ckpt` for `format=PickleTensor`, which the pickle rule
 *   then refuses): an on-demand request names its dest, and the version's own file name is
 *   only known once resolved;
 * - any other http(s) URL (a Hub `resolve` URL included: the service reads it as the `hf://`
 *   source it names) in the workflow-model shape, named after its last path segment.
 * The name is never taken from the remote side (Content-Disposition), only from the URL the
 * prompt carries, and only when it looks like a model file.
 */
export function urlRequest(raw: string, folder: string): UrlRequest {
  const value = raw.trim();
  const civitai = parseCivitai(value);
  if (civitai !== undefined) {
    if ('error' in civitai) return { problem: civitai.error };
    const ext = civitai.query.format === 'GGUF' ? 'gguf' : civitai.query.format === 'PickleTensor' ? 'ckpt' : 'safetensors';
    return { request: { source: value, dest: `${folder}/civitai-${civitai.versionId}.${ext}` } };
  }
  const name = lastSegment(value);
  if (typeof name !== 'string') return { problem: name.problem };
  if (/^(hf|s3):\/\//i.test(value)) return { request: { source: value, dest: `${folder}/${name}` } };
  return { request: { name, url: value, directory: folder } };
}

/** The URL's last path segment, decoded, when it is a safe model file name. */
function lastSegment(value: string): string | { problem: string } {
  let path: string;
  if (/^(hf|s3):\/\//i.test(value)) {
    path = value.replace(/^[a-z0-9]+:\/\//i, '').split(/[?#]/)[0] ?? '';
  } else {
    try {
      path = new URL(value).pathname;
    } catch {
      return { problem: 'is not a valid URL' };
    }
  }
  const seg = path.split('/').pop() ?? '';
  let name: string;
  try {
    name = decodeURIComponent(seg);
  } catch {
    return { problem: 'has a file name that is not valid percent-encoding' };
  }
  // A decoded "/" or "\" would make the name a path: "..%2Fx.safetensors" must not climb out.
  // eslint-disable-next-line no-control-regex -- control characters are exactly what we refuse
  if (name === '' || name === '.' || name === '..' || /[/\\\x00-\x1f\x7f]/.test(name) || Buffer.byteLength(name) > 255) {
    return { problem: 'does not end in a usable file name' };
  }
  if (!MODEL_FILE.test(name)) return { problem: `does not end in a model file name (.safetensors, .sft, .ckpt, .pt, .pth, .bin, .gguf), got "${name.slice(0, 80)}"` };
  return name;
}
