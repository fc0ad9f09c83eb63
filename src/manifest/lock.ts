import path from 'node:path';
import * as z from 'zod';
import { ModelsyncError } from '../errors.js';
import { writeFileAtomic } from '../fs/atomic-write.js';
import { destProblem, isPickleFormat } from './dest.js';
import type { Entry, Manifest, UnplacedEntry } from './types.js';

/**
 * The lock file: every entry of one manifest pinned to exact content, so that a sync is
 * reproducible and, for hf:// entries, needs no Hub API call. It sits next to its manifest as
 * `NAME.lock.json` (`models.yaml` -> `models.lock.json`) and is meant to be committed with it.
 * No timestamps: locking twice against unchanged sources writes the same bytes.
 */
const HEX64 = /^[0-9a-f]{64}$/;

const LockEntrySchema = z.strictObject({
  source: z.string().min(1),
  dest: z.string().min(1),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(HEX64, 'must be 64 lowercase hex characters'),
  /** hf:// only: the commit the revision resolved to. */
  commit: z.string().regex(/^[0-9a-f]{40}$/, 'must be a 40-hex commit').optional(),
  /** hf:// files stored without LFS: the Hub addresses them by git blob sha1, which sync verifies. */
  gitsha1: z.string().regex(/^[0-9a-f]{40}$/, 'must be 40 hex characters').optional(),
  /** s3:// only: the ETag seen when locking (a later sha256 is reused while it is unchanged). */
  etag: z.string().optional(),
  /** civitai sources: the version's file, so that a locked entry is downloaded without asking the API. */
  civitai: z
    .strictObject({
      version: z.number().int().positive(),
      file: z.string().min(1),
      type: z.string().min(1),
      format: z.string().optional(),
      size: z.string().optional(),
      fp: z.string().optional(),
    })
    .optional(),
  /** civitai entries written without dest: `dest` is the one derived from the model type and file name. */
  destDerived: z.literal(true).optional(),
  /** The entry's `file:` as written (civitai), which tells entries of one source apart when their dest is derived. */
  file: z.string().min(1).optional(),
  /** Where the sha256 came from. */
  sha256From: z.enum(['manifest', 'hub', 's3-checksum', 'download', 'civitai']),
});

const LockSchema = z.strictObject({
  lockVersion: z.literal(1),
  /** File name of the manifest this lock belongs to. */
  manifest: z.string(),
  entries: z.array(LockEntrySchema),
});

export type LockEntry = z.infer<typeof LockEntrySchema>;
export type LockFile = z.infer<typeof LockSchema>;

/** The lock file's text (readManifestFiles): undefined when there is none; E_LOCK_DRIFT when it is unusable. */
export function parseLock(text: string | undefined, file: string): LockFile | undefined {
  if (text === undefined) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw unusable(file, 'not JSON', e);
  }
  const parsed = LockSchema.safeParse(data);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw unusable(file, first ? `${first.path.join('.') || '(document)'}: ${first.message}` : 'invalid');
  }
  return parsed.data;
}

function unusable(file: string, why: string, cause?: unknown): ModelsyncError {
  return new ModelsyncError('E_LOCK_DRIFT', `lock file ${file} is not a usable modelsync lock (${why}); run "modelsync lock" to rewrite it, or pass --update-lock`, { cause });
}

/**
 * Write atomically: a reader sees the old lock or the new one, never half of one. Going through
 * the schema puts every entry's keys in one order, so unchanged pins give unchanged bytes.
 * Returns the text written.
 */
export async function writeLock(file: string, lock: LockFile): Promise<string> {
  const text = `${JSON.stringify(LockSchema.parse(lock), null, 2)}\n`;
  await writeFileAtomic(file, text);
  return text;
}

function entryKey(source: string, dest: string | undefined, file: string | undefined): string {
  // A derived dest is the lock's answer, not part of the question: such entries are known by source and file.
  return dest === undefined ? `${source}\n\n${file ?? ''}` : `${source}\n${dest}`;
}

/** The lock's entries by (source, dest), or (source, file) for a derived dest. */
export function lockIndex(lock: LockFile | undefined): Map<string, LockEntry> {
  return new Map((lock?.entries ?? []).map((l) => [entryKey(l.source, l.destDerived ? undefined : l.dest, l.file), l]));
}

export function lockEntryFor(index: ReadonlyMap<string, LockEntry>, e: Entry | UnplacedEntry): LockEntry | undefined {
  const derived = !('dest' in e) || e.derived === true;
  return index.get(entryKey(e.source.uri, derived ? undefined : e.dest, e.file));
}

/** How an entry is named in drift messages. */
function labelOf(e: Entry | UnplacedEntry): string {
  return 'dest' in e ? e.dest : `dest from ${e.source.uri}`;
}

/** Why a lock entry cannot stand for a manifest entry, or undefined when it can. */
export function entryDisagreement(e: Entry | UnplacedEntry, l: LockEntry): string | undefined {
  if (e.sha256 !== undefined && e.sha256 !== l.sha256) return `the manifest says sha256 ${e.sha256}, the lock ${l.sha256}`;
  if (e.size !== undefined && e.size !== l.size) return `the manifest says size ${e.size}, the lock ${l.size}`;
  if (e.source.kind === 'civitai') {
    if (l.civitai === undefined) return 'the lock pins no Civitai file for this entry';
    if (l.civitai.version !== e.source.versionId) return `the manifest names Civitai version ${e.source.versionId}, the lock ${l.civitai.version}`;
    if (e.file !== undefined && e.file !== l.civitai.file) return `the manifest names file ${JSON.stringify(e.file)}, the lock ${JSON.stringify(l.civitai.file)}`;
  } else if (l.civitai !== undefined || l.destDerived !== undefined) {
    return 'the lock has Civitai fields for a non-civitai entry';
  }
  if (e.source.kind === 'hf') {
    if (l.commit === undefined) return 'the lock has no commit for this hf:// entry';
    if (/^[0-9a-f]{40}$/.test(e.source.revision) && e.source.revision !== l.commit) return `the manifest pins commit ${e.source.revision}, the lock ${l.commit}`;
  } else if (l.commit !== undefined || l.gitsha1 !== undefined) {
    return 'the lock has Hub fields for a non-hf:// entry';
  }
  return undefined;
}

/** Every way the lock and the manifest disagree; empty when the lock applies as it is. */
export function lockDrift(manifest: Manifest, lock: LockFile): string[] {
  const out: string[] = [];
  const name = path.basename(manifest.path);
  if (lock.manifest !== name) out.push(`the lock was written for "${lock.manifest}", not "${name}"`);
  const index = lockIndex(lock);
  const used = new Set<LockEntry>();
  const dests = new Map(manifest.entries.map((e) => [e.dest, e]));
  for (const e of [...manifest.entries, ...manifest.unplaced]) {
    const l = lockEntryFor(index, e);
    if (l === undefined) {
      out.push(`models[${e.index}] (${labelOf(e)}) from ${e.source.uri} is not in the lock`);
      continue;
    }
    used.add(l);
    const why = entryDisagreement(e, l) ?? (!('dest' in e) ? derivedProblem(e, l, manifest, dests) : undefined);
    if (why !== undefined) out.push(`models[${e.index}] (${labelOf(e)}): ${why}`);
  }
  for (const l of lock.entries) {
    if (!used.has(l)) out.push(`the lock pins ${l.source} -> ${l.dest}, which the manifest no longer has`);
  }
  return out;
}

/**
 * A lock's derived dest is input like any written one (the lock is a file anyone can edit): the
 * same rules, or it does not apply.
 */
function derivedProblem(e: UnplacedEntry, l: LockEntry, manifest: Manifest, dests: ReadonlyMap<string, Entry>): string | undefined {
  if (l.destDerived !== true) return 'the lock has a written dest for an entry without one';
  const problem = destProblem(l.dest, manifest.folders);
  if (problem !== undefined) return `the lock's derived dest ${JSON.stringify(l.dest)} ${problem}`;
  if (isPickleFormat(l.dest) && !e.allowPickle) return `the lock's derived dest ${l.dest} loads through pickle, and the entry does not set allow_pickle`;
  const other = dests.get(l.dest);
  if (other !== undefined && other.sha256 !== l.sha256 && other.source.uri !== e.source.uri) return `the lock's derived dest ${l.dest} is models[${other.index}]'s, with other content`;
  return undefined;
}

/** The drift, as the error that stops a sync (exit 2). */
export function driftError(manifest: Manifest, lockFile: string, drift: readonly string[]): ModelsyncError {
  const shown = drift.slice(0, 20).map((d) => `  - ${d}`);
  if (drift.length > shown.length) shown.push(`  - ... and ${drift.length - shown.length} more`);
  return new ModelsyncError(
    'E_LOCK_DRIFT',
    [`lock file ${lockFile} disagrees with manifest ${manifest.path}:`, ...shown, 'run "modelsync lock" to refresh the lock, or pass --update-lock'].join('\n'),
  );
}

/**
 * The manifest with the lock's pins applied. https:// and s3:// entries take their sha256 from
 * the lock; hf:// entries keep theirs (a small Hub file is verified by its git sha1, the key
 * the Hub gives) and get the commit, so they resolve without the Hub. Call only without drift.
 */
export function applyLock(manifest: Manifest, lock: LockFile): Manifest {
  const index = lockIndex(lock);
  const entries = manifest.entries.map((e): Entry => {
    const l = lockEntryFor(index, e);
    if (l === undefined) throw new Error(`applyLock: no lock entry for models[${e.index}]`);
    const hf = e.source.kind === 'hf';
    return pinnedEntry(e, l, hf);
  });
  // A derived dest comes from the lock: a warm start needs neither the state DB's record nor Civitai.
  const placed = manifest.unplaced.map((e): Entry => {
    const l = lockEntryFor(index, e);
    if (l === undefined) throw new Error(`applyLock: no lock entry for models[${e.index}]`);
    return pinnedEntry({ ...e, dest: l.dest, derived: true }, l, false);
  });
  return { ...manifest, entries: [...entries, ...placed].sort((a, b) => a.index - b.index), unplaced: [] };
}

function pinnedEntry(e: Entry, l: LockEntry, hf: boolean): Entry {
  return {
    ...e,
    sha256: hf ? e.sha256 : (e.sha256 ?? l.sha256),
    size: e.size ?? l.size,
    pinned: {
      commit: l.commit,
      algo: l.gitsha1 === undefined ? 'sha256' : 'gitsha1',
      hex: l.gitsha1 ?? l.sha256,
      size: l.size,
      ...(l.civitai === undefined ? {} : { civitai: l.civitai }),
    },
  };
}
