import { ModelsyncError } from '../errors.js';
import { destProblem, isPickleFormat } from '../manifest/dest.js';
import type { Entry, Manifest, UnplacedEntry } from '../manifest/types.js';
import { derivedDest, pickFile } from '../sources/civitai-pick.js';
import { cachedVersion, type CivitaiVersion } from '../sources/civitai-version.js';
import type { StateDb } from '../state/db.js';
import type { SyncContext } from './context.js';

/** A manifest with the dests of its civitai entries derived as far as they could be. */
export interface Placement {
  /** Entries placed now are in `entries` (in manifest order); those still unknown stay in `unplaced`. */
  readonly manifest: Manifest;
  /** Entries whose dest could be derived, but not safely: an unsafe name, no folder, a clash. */
  readonly failed: readonly { readonly entry: UnplacedEntry; readonly error: ModelsyncError }[];
}

/** What placing needs of the Civitai source: a version's description (cached, or asked for). */
export interface VersionSource {
  version(ref: UnplacedEntry['source'], signal: AbortSignal): Promise<CivitaiVersion>;
}

export type Filter = (e: Entry | UnplacedEntry) => boolean;

/** How an entry whose dest is not known yet is named in reports, /status and errors. */
export function unplacedLabel(e: { readonly source: { readonly uri: string }; readonly file?: string | undefined }): string {
  return `<${e.source.uri}${e.file === undefined ? '' : ` file ${e.file}`}>`;
}

/**
 * Place what the state DB already knows (no network: the warm start's path too). A dest is
 * `FOLDER/NAME` from the model type and the file's name, and it must pass every rule a written
 * one does: destProblem, the pickle rule, and no second entry with that dest and other content.
 */
export function placeFromCache(db: Pick<StateDb, 'civitaiVersion'>, manifest: Manifest, filter: Filter = () => true): Placement {
  const known = new Map<UnplacedEntry, CivitaiVersion>();
  for (const e of manifest.unplaced) {
    if (!filter(e)) continue;
    const v = cachedVersion(db.civitaiVersion(e.source.versionId), e.source.versionId);
    if (v !== undefined) known.set(e, v);
  }
  return place(manifest, known);
}

/**
 * Place every entry (of `filter`): from the state DB, else by asking Civitai for the version
 * (which the source then caches). An entry whose version cannot be had fails with that error.
 */
export async function placeAll(source: () => Promise<VersionSource>, manifest: Manifest, signal: AbortSignal, filter: Filter = () => true): Promise<Placement> {
  const todo = manifest.unplaced.filter(filter);
  if (todo.length === 0) return { manifest, failed: [] };
  const known = new Map<UnplacedEntry, CivitaiVersion>();
  const failed: { entry: UnplacedEntry; error: ModelsyncError }[] = [];
  const src = await source();
  await Promise.all(
    todo.map(async (e) => {
      try {
        known.set(e, await src.version(e.source, signal));
      } catch (err) {
        const me = err instanceof ModelsyncError ? err : new ModelsyncError('E_SYNC_FAILED', String(err), { cause: err });
        failed.push({ entry: e, error: me.forEntry(e.index, unplacedLabel(e)) });
      }
    }),
  );
  const placed = place(manifest, known);
  const stillUnknown = new Set(failed.map((f) => f.entry));
  return { manifest: { ...placed.manifest, unplaced: placed.manifest.unplaced.filter((e) => !stillUnknown.has(e)) }, failed: [...failed, ...placed.failed] };
}

function place(manifest: Manifest, known: ReadonlyMap<UnplacedEntry, CivitaiVersion>): Placement {
  if (known.size === 0) return { manifest, failed: [] };
  const taken = new Map<string, Entry>(manifest.entries.map((e) => [e.dest, e]));
  const placed: Entry[] = [];
  const failed: { entry: UnplacedEntry; error: ModelsyncError }[] = [];
  const rest: UnplacedEntry[] = [];
  for (const e of manifest.unplaced) {
    const v = known.get(e);
    if (v === undefined) {
      rest.push(e);
      continue;
    }
    const got = placeOne(e, v, manifest.folders, taken);
    if (got instanceof ModelsyncError) failed.push({ entry: e, error: got.forEntry(e.index, unplacedLabel(e)) });
    else {
      taken.set(got.dest, got);
      placed.push(got);
    }
  }
  const entries = [...manifest.entries, ...placed].sort((a, b) => a.index - b.index);
  return { manifest: { ...manifest, entries, unplaced: rest }, failed };
}

function placeOne(e: UnplacedEntry, v: CivitaiVersion, folders: readonly string[], taken: ReadonlyMap<string, Entry>): Entry | ModelsyncError {
  const ctx = { url: e.source.uri };
  const f = pickFile(v, e.source, e.file);
  if (f instanceof ModelsyncError) return f;
  const dest = derivedDest(v, f, e.source);
  if (dest instanceof ModelsyncError) return dest;
  const problem = destProblem(dest, folders);
  if (problem !== undefined) return new ModelsyncError('E_PATH_UNSAFE', `the dest derived from Civitai's file name, ${JSON.stringify(dest.slice(0, 120))}, ${problem}: write a dest for this entry`, ctx);
  if ((isPickleFormat(dest) || f.format === 'PickleTensor') && !e.allowPickle) {
    return new ModelsyncError('E_MANIFEST', `Civitai's file ${JSON.stringify(f.name)} loads through Python pickle, which can run arbitrary code; set allow_pickle: true only for sources you trust`, ctx);
  }
  const sha = f.sha256 ?? e.sha256;
  const prev = taken.get(dest);
  if (prev !== undefined) {
    const prevSha = prev.sha256 ?? prev.pinned?.hex;
    const same = (sha !== undefined && sha === prevSha) || prev.source.uri === e.source.uri;
    if (!same) return new ModelsyncError('E_MANIFEST', `the dest derived for it, ${dest}, is models[${prev.index}]'s, with other content: write a dest for one of them`, ctx);
  }
  return { ...e, dest, derived: true };
}

/** placeAll with the context's Civitai source (loaded only when an entry needs it). */
export function placeForSync(ctx: Pick<SyncContext, 'sourceFor'>, manifest: Manifest, signal: AbortSignal, filter?: Filter): Promise<Placement> {
  return placeAll(async () => (await ctx.sourceFor('civitai', manifest)) as unknown as VersionSource, manifest, signal, filter);
}
