import { shown } from '../remote-value.js';
import { isContentHex } from '../content-key.js';
import type { ContentKey } from '../content-key.js';

/** What the Hub says about one file at one commit, checked. */
export interface HfFileFacts {
  readonly path: string;
  readonly size: number;
  readonly algo: ContentKey['algo'];
  readonly hex: string;
}

/** Per requested path: the file, or why the answer about it cannot be used. Absent: not a file there. */
export type PathsInfoVerdict = ReadonlyMap<string, { readonly file: HfFileFacts } | { readonly problem: string }>;

/**
 * Read a paths-info answer (the parsed JSON, nothing checked yet) for the paths we asked about. Its content ids become file names in the store, so each one must be
 * a content id and nothing else: `lfs.oid` 64 lowercase hex (sha256), else `oid` 40 lowercase hex
 * (git blob sha1); a size is a non-negative safe integer. Items for paths nobody asked about are
 * ignored (they would otherwise be cached as the truth about those paths); a path answered twice,
 * differently, is a problem; a directory is not a file (absent). A list with an item that is not
 * an object is no paths-info answer at all: a problem for every path.
 */
export function readPathsInfo(answer: unknown, requested: readonly string[]): PathsInfoVerdict {
  const wanted = new Set(requested);
  const out = new Map<string, { file: HfFileFacts } | { problem: string }>();
  if (!Array.isArray(answer)) {
    for (const p of wanted) out.set(p, { problem: `an answer that is not a list (${shown(answer)})` });
    return out;
  }
  const bad = (answer as unknown[]).findIndex((item) => item === null || typeof item !== 'object' || Array.isArray(item));
  if (bad >= 0) {
    for (const p of wanted) out.set(p, { problem: `an item that is not an object (${shown((answer as unknown[])[bad])})` });
    return out;
  }
  for (const item of answer as unknown[]) {
    const rec = item as Record<string, unknown>;
    const p = rec['path'];
    if (typeof p !== 'string' || !wanted.has(p)) continue;
    const verdict = readItem(rec, p);
    if (verdict === undefined) continue;
    const prev = out.get(p);
    if (prev !== undefined && !sameVerdict(prev, verdict)) {
      out.set(p, { problem: 'two different answers for the same path' });
      continue;
    }
    out.set(p, verdict);
  }
  return out;
}

function readItem(rec: Record<string, unknown>, p: string): { file: HfFileFacts } | { problem: string } | undefined {
  const type = rec['type'];
  if (type === 'directory') return undefined;
  if (type !== 'file') return { problem: `type ${shown(type)} (neither "file" nor "directory")` };
  const size = rec['size'];
  if (!isByteCount(size)) return { problem: `size ${shown(size)}, which is not a byte count` };
  const lfs = rec['lfs'];
  if (lfs !== undefined && lfs !== null) {
    if (typeof lfs !== 'object') return { problem: `lfs ${shown(lfs)}, which is not an object` };
    const l = lfs as Record<string, unknown>;
    const oid = l['oid'];
    if (!isContentHex('sha256', oid)) return { problem: `lfs.oid ${shown(oid)}, which is not a sha256 (64 lowercase hex)` };
    if (l['size'] !== undefined && l['size'] !== size) return { problem: `lfs.size ${shown(l['size'])}, which disagrees with its size ${size}` };
    return { file: { path: p, size, algo: 'sha256', hex: oid } };
  }
  const oid = rec['oid'];
  if (!isContentHex('gitsha1', oid)) return { problem: `oid ${shown(oid)}, which is not a git blob id (40 lowercase hex)` };
  return { file: { path: p, size, algo: 'gitsha1', hex: oid } };
}

export function isByteCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function sameVerdict(a: { file: HfFileFacts } | { problem: string }, b: { file: HfFileFacts } | { problem: string }): boolean {
  if ('problem' in a || 'problem' in b) return 'problem' in a && 'problem' in b && a.problem === b.problem;
  return a.file.size === b.file.size && a.file.algo === b.file.algo && a.file.hex === b.file.hex;
}
