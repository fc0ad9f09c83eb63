import type { CivitaiFileQuery, CivitaiRef } from './types.js';

type Parsed = CivitaiRef | { error: string };

const ID = /^[1-9]\d{0,11}$/;
const VALUE = /^[A-Za-z0-9 ._-]{1,40}$/;
const QUERY_KEYS = ['type', 'format', 'size', 'fp'] as const;
/** civitai.com's own names for the hosts that serve its API (civitai.green is its SFW twin). */
const HOSTS = new Set(['civitai.com', 'www.civitai.com', 'civitai.green', 'www.civitai.green']);
/** An AIR's `.format` suffix, as the download URL's `format=` names it. */
const AIR_FORMATS: Readonly<Record<string, string>> = { safetensors: 'SafeTensor', ckpt: 'PickleTensor', pt: 'PickleTensor', pickletensor: 'PickleTensor', gguf: 'GGUF', zip: 'Diffusers' };

/**
 * A Civitai model version, in any of the forms people paste: `civitai://VERSION[?type=&format=
 * &size=&fp=]`, an AIR (`urn:air:ECOSYSTEM:TYPE:civitai:MODEL@VERSION[.format]`), the site's
 * download URL (`https://civitai.com/api/download/models/VERSION?...`), a model page with
 * `?modelVersionId=`, or the API's own `/api/v1/model-versions/VERSION`. Undefined when `uri` is
 * none of them (another https:// URL is a plain https source). A token in the URL is refused: it
 * would land in logs, the state DB and the lock; CIVITAI_TOKEN carries it instead.
 */
export function parseCivitai(uri: string): Parsed | undefined {
  if (uri.startsWith('civitai://')) return parseScheme(uri);
  if (/^urn:air:/i.test(uri)) return parseAir(uri);
  if (!/^https?:\/\//i.test(uri)) return undefined;
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return undefined;
  }
  if (!HOSTS.has(u.hostname.toLowerCase())) return undefined;
  const path = u.pathname.replace(/\/+$/, '');
  const download = /^\/api\/download\/models\/(\d+)$/.exec(path) ?? /^\/api\/v1\/model-versions\/(\d+)$/.exec(path);
  if (download) return withQuery(uri, download[1] ?? '', undefined, u.searchParams, []);
  const page = /^\/models\/(\d+)(?:\/[^/]*)?$/.exec(path);
  if (!page) return undefined;
  const version = u.searchParams.get('modelVersionId');
  if (version === null) return { error: `names Civitai model ${page[1] ?? ''}, not one of its versions: add ?modelVersionId=VERSION (the version's id on its page), or write civitai://VERSION` };
  return withQuery(uri, version, Number(page[1]), u.searchParams, ['modelVersionId']);
}

function parseScheme(uri: string): Parsed {
  const rest = uri.slice('civitai://'.length);
  const q = rest.indexOf('?');
  const id = q < 0 ? rest : rest.slice(0, q);
  return withQuery(uri, id, undefined, new URLSearchParams(q < 0 ? '' : rest.slice(q + 1)), []);
}

function parseAir(uri: string): Parsed {
  const m = /^urn:air:([a-z0-9_.-]+):([a-z0-9_.-]+):([a-z0-9_-]+):([^@:.]+)(?:@([^:.]+))?(:[^.]*)?(?:\.([a-z0-9]+))?$/i.exec(uri);
  if (!m) return { error: 'expected urn:air:ECOSYSTEM:TYPE:civitai:MODEL@VERSION' };
  const [, , , source = '', model = '', version, layer, format] = m;
  if (source.toLowerCase() !== 'civitai') return { error: `AIR source "${source}" is not supported (only civitai; for the Hub write hf://)` };
  if (!ID.test(model)) return { error: `bad model id "${model}" in the AIR` };
  if (version === undefined) return { error: `the AIR names model ${model} but no version: add @VERSION` };
  if (layer !== undefined) return { error: 'AIR layers are not supported' };
  const query: { format?: string } = {};
  if (format !== undefined) {
    const f = AIR_FORMATS[format.toLowerCase()];
    if (f === undefined) return { error: `unknown AIR format ".${format}" (use .safetensors, .ckpt, .pt or .gguf)` };
    query.format = f;
  }
  if (!ID.test(version)) return { error: `bad version id "${version}" in the AIR` };
  return { kind: 'civitai', versionId: Number(version), modelId: Number(model), query, uri };
}

function withQuery(uri: string, version: string, modelId: number | undefined, params: URLSearchParams, ignored: readonly string[]): Parsed {
  if (!ID.test(version)) return { error: `bad Civitai model version id "${version.slice(0, 40)}" (a positive integer)` };
  const query: { -readonly [K in keyof CivitaiFileQuery]: string } = {};
  for (const [k, v] of params) {
    if (ignored.includes(k)) continue;
    if (k === 'token') return { error: 'a Civitai token in the URL would be written to logs, the state DB and the lock file: remove it and set CIVITAI_TOKEN instead' };
    if (!(QUERY_KEYS as readonly string[]).includes(k)) return { error: `unknown parameter "${k.slice(0, 40)}" (Civitai's download URLs take type, format, size and fp)` };
    if (!VALUE.test(v)) return { error: `bad ${k} "${v.slice(0, 40)}"` };
    query[k as (typeof QUERY_KEYS)[number]] = v;
  }
  return { kind: 'civitai', versionId: Number(version), modelId, query, uri };
}
