import { destProblem, fileNameProblem, isPickleFormat } from './dest.js';
import type { EntryInput } from './schema.js';
import { parseSourceUri } from './source-uri.js';
import type { Entry, UnplacedEntry } from './types.js';

/** One problem of one entry, before a line number is known. */
export interface EntryProblem {
  readonly field: string;
  readonly message: string;
}

export interface EntryChecks {
  /** Extra top-level folders allowed in `dest` (the manifest's `folders:`). */
  readonly folders: readonly string[];
  /** False when something else (a lock file, trust on first use) supplies the sha256 of https:// and s3:// entries. */
  readonly requireHashes: boolean;
}

/**
 * The semantic checks of one entry that passed the schema: its source URI, its dest, the hash a
 * non-Hub source needs, pickle formats. The manifest and on-demand requests both go through here,
 * so a request is refused exactly where a manifest entry would be.
 */
export function checkEntry(e: EntryInput, index: number, checks: EntryChecks): { entry: Entry | undefined; unplaced?: UnplacedEntry | undefined; problems: EntryProblem[] } {
  const problems: EntryProblem[] = [];
  const add = (field: string, message: string): void => {
    problems.push({ field, message });
  };
  const source = parseSourceUri(e.source);
  if ('error' in source) add('source', source.error);
  const civitai = 'kind' in source && source.kind === 'civitai';
  // A civitai entry may leave dest out: it is derived later (sync/place.ts), and checked then.
  const dp = e.dest === undefined ? (civitai || !('kind' in source) ? undefined : 'is required (only civitai entries may leave it out)') : destProblem(e.dest, checks.folders);
  if (dp !== undefined) add('dest', dp);
  if (e.file !== undefined) {
    const fp = civitai ? fileNameProblem(e.file) : 'is only for civitai sources';
    if (fp !== undefined) add('file', fp);
  }
  if ('kind' in source && source.kind !== 'hf' && !civitai && e.sha256 === undefined && checks.requireHashes) {
    add('sha256', `required for ${source.kind}:// sources (the source gives no sha256); "modelsync lock" can compute it`);
  }
  const civitaiPickle = civitai && (source.query.format === 'PickleTensor' || isPickleFormat(e.file ?? ''));
  const pickleName = isPickleFormat(e.dest ?? '') || civitaiPickle || ('kind' in source && !civitai && isPickleFormat(sourceName(e.source)));
  if (pickleName && e.allow_pickle !== true) {
    add('allow_pickle', 'this format loads through Python pickle, which can run arbitrary code; set allow_pickle: true only for sources you trust');
  }
  if (!('kind' in source) || dp !== undefined) return { entry: undefined, problems };
  const common = {
    index,
    sha256: e.sha256?.toLowerCase(),
    size: e.size,
    allowPickle: e.allow_pickle ?? false,
    required: e.required ?? true,
    ...(e.file === undefined ? {} : { file: e.file }),
  };
  if (e.dest !== undefined) return { entry: { ...common, source, dest: e.dest }, problems };
  if (source.kind === 'civitai') return { entry: undefined, unplaced: { ...common, source }, problems };
  return { entry: undefined, problems };
}

function sourceName(uri: string): string {
  return uri.split(/[?#]/)[0] ?? uri;
}

/** Two entries may share a dest only when both promise the same content. */
export function sameContent(a: Entry, b: Entry): boolean {
  return (a.sha256 !== undefined && a.sha256 === b.sha256) || (a.source.uri === b.source.uri && a.sha256 === b.sha256);
}

/** Entries (by index) whose dest an earlier entry of the list already has, with other content. */
export function duplicateDests(entries: readonly Entry[]): { entry: Entry; first: Entry }[] {
  const out: { entry: Entry; first: Entry }[] = [];
  const seen = new Map<string, Entry>();
  for (const e of entries) {
    const prev = seen.get(e.dest);
    if (!prev) seen.set(e.dest, e);
    else if (!sameContent(prev, e)) out.push({ entry: e, first: prev });
  }
  return out;
}
