import { LineCounter, parseDocument, isMap, type Document, type Node } from 'yaml';
import type * as z from 'zod';
import { checkEntry, duplicateDests } from './entry.js';
import { ManifestError } from './manifest-error.js';
import { parseMirrors } from './mirrors.js';
import { parsePolicy } from './policy.js';
import { EntrySchema, ManifestSchema } from './schema.js';
import type { Entry, Manifest, ManifestProblem, UnplacedEntry } from './types.js';

export interface ParseOptions {
  /** False when a lock file supplies the sha256 of https:// and s3:// entries (default true). */
  readonly requireHashes?: boolean;
}

/** Validate manifest text; JSON is parsed by the YAML parser too, so both get line numbers. */
export function parseManifest(text: string, file: string, opts: ParseOptions = {}): Manifest {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
  const lineAt = (offset: number | undefined): number | undefined => (offset === undefined ? undefined : lc.linePos(offset).line);
  if (doc.errors.length > 0) {
    throw new ManifestError(file, doc.errors.map((e) => ({ entry: undefined, field: 'syntax', line: lineAt(e.pos[0]), message: e.message.split('\n')[0] ?? e.message })));
  }
  let data: unknown;
  try {
    // The yaml package stops an alias bomb (aliases that expand a few lines into gigabytes)
    // with a ReferenceError, and a document nested too deep ends in a RangeError: both are the
    // file's fault, not ours.
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    const why = e instanceof ReferenceError && /alias/i.test(e.message) ? 'too many aliases (a YAML alias bomb?)' : e instanceof RangeError ? 'nested too deeply' : undefined;
    if (why === undefined) throw e;
    throw new ManifestError(file, [{ entry: undefined, field: 'syntax', line: undefined, message: why }]);
  }
  const problems: ManifestProblem[] = [];
  const top = ManifestSchema.safeParse(data);
  if (!top.success) {
    problems.push(...zodProblems(top.error, [], doc, lineAt));
    throw new ManifestError(file, problems);
  }
  const folders = top.data.folders ?? [];
  const entries: Entry[] = [];
  const unplaced: UnplacedEntry[] = [];
  top.data.models.forEach((raw, index) => {
    const line = (field?: string): number | undefined => lineAt(nodeAt(doc, field === undefined ? ['models', index] : ['models', index, field])?.range?.[0]);
    const add = (field: string, message: string): void => {
      problems.push({ entry: index, field, line: line(field), message });
    };
    const parsed = EntrySchema.safeParse(raw);
    if (!parsed.success) problems.push(...zodProblems(parsed.error, ['models', index], doc, lineAt));
    // Unknown fields alone do not stop the other checks: every problem is listed at once.
    const loose = parsed.success ? parsed : EntrySchema.strip().safeParse(raw);
    if (!loose.success) return;
    const checked = checkEntry(loose.data, index, { folders, requireHashes: opts.requireHashes !== false });
    for (const p of checked.problems) add(p.field, p.message);
    if (checked.entry) entries.push(checked.entry);
    if (checked.unplaced) unplaced.push(checked.unplaced);
  });
  problems.push(...duplicateDestProblems(entries, (i) => lineAt(nodeAt(doc, ['models', i, 'dest'])?.range?.[0])));
  const onDemand = top.data.on_demand && parsePolicy(top.data.on_demand);
  const mirrored = parseMirrors(top.data);
  for (const p of [...(onDemand?.problems ?? []), ...mirrored.problems]) {
    problems.push({ entry: undefined, field: p.field, line: lineAt(nodeAt(doc, p.field.split('.').map((k) => (/^\d+$/.test(k) ? Number(k) : k)))?.range?.[0]), message: p.message });
  }
  if (problems.length > 0) throw new ManifestError(file, problems);
  const s3 = top.data.s3 ?? {};
  return {
    path: file,
    entries,
    unplaced,
    folders,
    s3: { endpoint: s3.endpoint, region: s3.region, pathStyle: s3.path_style },
    onDemand: onDemand?.policy,
    ...(mirrored.mirrors.length > 0 ? { mirrors: mirrored.mirrors } : {}),
    ...(mirrored.mirrorWrite ? { mirrorWrite: mirrored.mirrorWrite } : {}),
  };
}

/** Same dest twice is fine only when both promise the same content. */
function duplicateDestProblems(entries: readonly Entry[], lineOf: (i: number) => number | undefined): ManifestProblem[] {
  return duplicateDests(entries).map(({ entry, first }) => ({ entry: entry.index, field: 'dest', line: lineOf(entry.index), message: `same dest as models[${first.index}] with different content` }));
}

function nodeAt(doc: Document, p: readonly (string | number)[]): Node | undefined {
  for (let n = p.length; n > 0; n--) {
    const node: unknown = doc.getIn(p.slice(0, n), true);
    if (node !== undefined && node !== null && typeof node === 'object' && 'range' in node) return node as Node;
  }
  return undefined;
}

function zodProblems(err: z.ZodError, prefix: readonly (string | number)[], doc: Document, lineAt: (o: number | undefined) => number | undefined): ManifestProblem[] {
  const out: ManifestProblem[] = [];
  for (const issue of err.issues) {
    const p = [...prefix, ...issue.path.filter((k): k is string | number => typeof k !== 'symbol')];
    const entry = p[0] === 'models' && typeof p[1] === 'number' ? p[1] : undefined;
    const rest = entry === undefined ? p : p.slice(2);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const line = lineAt(keyNode(doc, p, key)?.range?.[0] ?? nodeAt(doc, p)?.range?.[0]);
        out.push({ entry, field: [...rest, key].join('.'), line, message: 'unknown field' });
      }
      continue;
    }
    out.push({ entry, field: rest.join('.') || '(document)', line: lineAt(nodeAt(doc, p)?.range?.[0]), message: issue.message });
  }
  return out;
}

function keyNode(doc: Document, p: readonly (string | number)[], key: string): Node | undefined {
  const parent: unknown = p.length === 0 ? doc.contents : doc.getIn(p, true);
  if (!isMap(parent)) return undefined;
  for (const pair of parent.items) {
    const k: unknown = pair.key;
    if (k !== null && typeof k === 'object' && 'value' in k && (k as { value: unknown }).value === key) return k as Node;
  }
  return undefined;
}

