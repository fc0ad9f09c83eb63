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

/** Where a value of the document is, for problems: lines of the YAML parser's nodes, or none. */
interface Locator {
  /** The line of the value at `p` (or of its nearest ancestor with one). */
  line(p: readonly (string | number)[]): number | undefined;
  /** The line of the key `key` of the mapping at `p`. */
  keyLine(p: readonly (string | number)[], key: string): number | undefined;
}

/** A JSON manifest checked without the YAML parser: it has no problems to place on a line. */
const NO_LINES: Locator = { line: () => undefined, keyLine: () => undefined };

/**
 * Validate manifest text. JSON is parsed by the YAML parser too, so both get line numbers; but
 * that parser takes a tenth of a millisecond per entry (a quarter of a second for 2,000), so JSON
 * text is first read with JSON.parse, and only a manifest with a problem to report (or a key
 * given twice, which JSON.parse would let pass) is read again by the YAML parser for its lines.
 */
export function parseManifest(text: string, file: string, opts: ParseOptions = {}): Manifest {
  const data = plainJson(text);
  if (data !== undefined) {
    const fast = manifestFrom(data.value, NO_LINES, opts);
    if (!Array.isArray(fast)) return { path: file, ...fast };
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
  const lineAt = (offset: number | undefined): number | undefined => (offset === undefined ? undefined : lc.linePos(offset).line);
  if (doc.errors.length > 0) {
    throw new ManifestError(file, doc.errors.map((e) => ({ entry: undefined, field: 'syntax', line: lineAt(e.pos[0]), message: e.message.split('\n')[0] ?? e.message })));
  }
  let js: unknown;
  try {
    // The yaml package stops an alias bomb (aliases that expand a few lines into gigabytes)
    // with a ReferenceError, and a document nested too deep ends in a RangeError: both are the
    // file's fault, not ours.
    js = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    const why = e instanceof ReferenceError && /alias/i.test(e.message) ? 'too many aliases (a YAML alias bomb?)' : e instanceof RangeError ? 'nested too deeply' : undefined;
    if (why === undefined) throw e;
    throw new ManifestError(file, [{ entry: undefined, field: 'syntax', line: undefined, message: why }]);
  }
  const got = manifestFrom(js, { line: (p) => lineAt(nodeAt(doc, p)?.range?.[0]), keyLine: (p, key) => lineAt(keyNode(doc, p, key)?.range?.[0] ?? nodeAt(doc, p)?.range?.[0]) }, opts);
  if (Array.isArray(got)) throw new ManifestError(file, got);
  return { path: file, ...got };
}

/**
 * JSON text as JSON.parse reads it, when that is what the YAML parser would read too: an object,
 * no key given twice in one object (JSON.parse keeps the last; the YAML parser refuses it).
 * Anything else (YAML, broken JSON, a nesting too deep for JSON.parse) is left to the YAML parser.
 */
function plainJson(text: string): { value: unknown } | undefined {
  if (!text.trimStart().startsWith('{')) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return hasDuplicateKeys(text) ? undefined : { value };
}

/** Whether an object of `json` (valid JSON text) names one key twice. */
export function hasDuplicateKeys(json: string): boolean {
  // Per open object its keys so far; undefined for an array.
  const open: (Set<string> | undefined)[] = [];
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      let escaped = false;
      for (; j < json.length; j++) {
        const d = json.charCodeAt(j);
        if (d === 0x5c) {
          escaped = true;
          j++;
        } else if (d === 0x22) break;
      }
      const keys = open[open.length - 1];
      if (expectKey && keys) {
        const key = escaped ? (JSON.parse(json.slice(i, j + 1)) as string) : json.slice(i + 1, j);
        if (keys.has(key)) return true;
        keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) {
      open.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) {
      open.push(undefined);
      expectKey = false;
    } else if (c === 0x7d || c === 0x5d) {
      open.pop();
      expectKey = false;
    } else if (c === 0x2c) {
      expectKey = open[open.length - 1] !== undefined;
    }
  }
  return false;
}

/** The manifest `data` describes (all but its path), or every problem found in it, placed by `at`. */
function manifestFrom(data: unknown, at: Locator, opts: ParseOptions): Omit<Manifest, 'path'> | ManifestProblem[] {
  const problems: ManifestProblem[] = [];
  const top = ManifestSchema.safeParse(data);
  if (!top.success) return zodProblems(top.error, [], at);
  const folders = top.data.folders ?? [];
  const entries: Entry[] = [];
  const unplaced: UnplacedEntry[] = [];
  top.data.models.forEach((raw, index) => {
    const line = (field?: string): number | undefined => at.line(field === undefined ? ['models', index] : ['models', index, field]);
    const add = (field: string, message: string): void => {
      problems.push({ entry: index, field, line: line(field), message });
    };
    const parsed = EntrySchema.safeParse(raw);
    if (!parsed.success) problems.push(...zodProblems(parsed.error, ['models', index], at));
    // Unknown fields alone do not stop the other checks: every problem is listed at once.
    const loose = parsed.success ? parsed : EntrySchema.strip().safeParse(raw);
    if (!loose.success) return;
    const checked = checkEntry(loose.data, index, { folders, requireHashes: opts.requireHashes !== false });
    for (const p of checked.problems) add(p.field, p.message);
    if (checked.entry) entries.push(checked.entry);
    if (checked.unplaced) unplaced.push(checked.unplaced);
  });
  problems.push(...duplicateDestProblems(entries, (i) => at.line(['models', i, 'dest'])));
  const onDemand = top.data.on_demand && parsePolicy(top.data.on_demand);
  const mirrored = parseMirrors(top.data);
  for (const p of [...(onDemand?.problems ?? []), ...mirrored.problems]) {
    problems.push({ entry: undefined, field: p.field, line: at.line(p.field.split('.').map((k) => (/^\d+$/.test(k) ? Number(k) : k))), message: p.message });
  }
  if (problems.length > 0) return problems;
  const s3 = top.data.s3 ?? {};
  return {
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

function zodProblems(err: z.ZodError, prefix: readonly (string | number)[], at: Locator): ManifestProblem[] {
  const out: ManifestProblem[] = [];
  for (const issue of err.issues) {
    const p = [...prefix, ...issue.path.filter((k): k is string | number => typeof k !== 'symbol')];
    const entry = p[0] === 'models' && typeof p[1] === 'number' ? p[1] : undefined;
    const rest = entry === undefined ? p : p.slice(2);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ entry, field: [...rest, key].join('.'), line: at.keyLine(p, key), message: 'unknown field' });
      continue;
    }
    out.push({ entry, field: rest.join('.') || '(document)', line: at.line(p), message: issue.message });
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

