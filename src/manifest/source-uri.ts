import { isLoopback } from '../loopback.js';
import { redactUrl } from '../redact.js';
import { parseCivitai } from './civitai-uri.js';
import type { SourceRef } from './types.js';

const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Parse a manifest `source`; returns a message instead of throwing so every problem can be listed. */
export function parseSourceUri(uri: string): SourceRef | { error: string } {
  if (uri.includes('\0')) return { error: 'contains a NUL byte' };
  if (uri.startsWith('hf://')) return parseHf(uri);
  if (uri.startsWith('s3://')) return parseS3(uri);
  const civitai = parseCivitai(uri);
  if (civitai !== undefined) return civitai;
  if (/^https?:\/\//i.test(uri)) return parseHttp(uri);
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(uri)?.[1];
  return { error: scheme ? `unknown scheme "${scheme}:" (use hf://, s3://, https:// or civitai://)` : 'not a URI (use hf://, s3://, https:// or civitai://)' };
}

function parseHf(uri: string): SourceRef | { error: string } {
  let rest = uri.slice('hf://'.length);
  let repoType: 'model' | 'dataset' = 'model';
  if (rest.startsWith('datasets/')) {
    repoType = 'dataset';
    rest = rest.slice('datasets/'.length);
  } else if (rest.startsWith('spaces/')) {
    return { error: 'Spaces are not a model source' };
  }
  const parts = rest.split('/');
  if (parts.length < 3) return { error: 'expected hf://[datasets/]ORG/NAME[@REVISION]/PATH' };
  const org = parts[0] ?? '';
  const nameRev = parts[1] ?? '';
  const at = nameRev.indexOf('@');
  const name = at < 0 ? nameRev : nameRev.slice(0, at);
  let revision = 'main';
  if (at >= 0) {
    try {
      revision = decodeURIComponent(nameRev.slice(at + 1));
    } catch {
      return { error: 'revision is not valid percent-encoding' };
    }
    if (revision === '') return { error: 'empty revision after "@"' };
  }
  if (!REPO_PART.test(org) || !REPO_PART.test(name)) return { error: `bad repo id "${org}/${name}"` };
  const filePath = parts.slice(2).join('/');
  const segs = filePath.split('/');
  if (segs.some((s) => s === '' || s === '.' || s === '..')) return { error: `bad path in repo "${filePath}"` };
  return { kind: 'hf', repoType, repo: `${org}/${name}`, revision, path: filePath, uri };
}

function parseS3(uri: string): SourceRef | { error: string } {
  const rest = uri.slice('s3://'.length);
  const slash = rest.indexOf('/');
  if (slash <= 0 || slash === rest.length - 1) return { error: 'expected s3://BUCKET/KEY' };
  const bucket = rest.slice(0, slash);
  if (!BUCKET.test(bucket)) return { error: `bad bucket name "${bucket}"` };
  return { kind: 's3', bucket, key: rest.slice(slash + 1), uri };
}

function parseHttp(uri: string): SourceRef | { error: string } {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return { error: 'not a valid URL' };
  }
  if (u.username || u.password) return { error: 'credentials in the URL are not allowed (use MODELSYNC_HTTP_TOKENS)' };
  // Plain http is accepted only for loopback, where local mirrors and tests live.
  if (u.protocol === 'http:' && !isLoopback(u.hostname)) return { error: 'plain http:// is refused (use https://)' };
  // A presigned URL carries its credential in the query: `uri` is what messages, the state DB and
  // status show, so it keeps only origin and path; `url` (what is fetched) keeps everything.
  return { kind: 'https', url: u.toString(), uri: u.search === '' ? uri : redactUrl(u) };
}
