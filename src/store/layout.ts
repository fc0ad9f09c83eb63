import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { KEY_NAME, isContentKey, type ContentKey } from '../content-key.js';
import { ModelsyncError, errnoCode } from '../errors.js';
import { unwritableError } from '../os-errors.js';
import { writeJsonAtomic } from '../fs/atomic-write.js';
import { holdDir, inDir, type HeldDir } from '../fs/held-dir.js';
import type { BlobPlace } from './blobs.js';
import { withReopen } from '../fs/estale.js';
import { shown } from '../remote-value.js';

/** Bumped when the on-disk layout changes incompatibly; a newer store is refused, never rewritten. */
export const LAYOUT_VERSION = 1;

export interface StoreLayout {
  /** The store as configured: for messages, the state DB's names of blobs (blobPath), ids. */
  readonly root: string;
  readonly blobs: string;
  readonly tmp: string;
  readonly leases: string;
  /** Per-node records of what each node's manifest references, for gc. */
  readonly refs: string;
  /** Blobs found not to hash to their address, moved aside (made when first needed). */
  readonly quarantine: string;
  /**
   * Where to operate on each folder: held open by openStore (fs/held-dir.ts), so a folder swapped
   * for a symlink afterwards never receives a write; plain paths from storeLayout.
   */
  readonly at: StoreDirs;
  /**
   * Where to operate in STORE/blobs/<algo>: held once made (or found), for the layout's life.
   * Undefined when it does not exist and `create` is not asked.
   */
  algoAt(algo: ContentKey['algo'], opts?: { create?: boolean | undefined; made?: ((dir: string) => void) | undefined }): Promise<string | undefined>;
  /** Let go of the held folders (a context's close). */
  close(): Promise<void>;
}

export interface StoreDirs {
  readonly root: string;
  readonly blobs: string;
  readonly tmp: string;
  readonly leases: string;
  readonly refs: string;
}

/** The layout by path alone, nothing held: for tests and tools that only read. */
export function storeLayout(root: string): StoreLayout {
  const blobs = path.join(root, 'blobs');
  const tmp = path.join(root, 'tmp');
  const leases = path.join(root, 'leases');
  const refs = path.join(root, 'refs');
  return { root, blobs, tmp, leases, refs, quarantine: path.join(root, 'quarantine'), at: { root, blobs, tmp, leases, refs }, algoAt: (algo) => Promise.resolve(path.join(blobs, algo)), close: () => Promise.resolve() };
}

/** A path under `at` shown as the store's own path (for reports and messages). */
export function shownPath(layout: StoreLayout, p: string): string {
  for (const k of ['blobs', 'tmp', 'leases', 'refs', 'root'] as const) {
    const at = layout.at[k];
    if (p === at || p.startsWith(`${at}/`)) return layout[k] + p.slice(at.length);
  }
  return p;
}

/** Where `key`'s blob is committed (see commitBlob): its shard folder below the held blobs folder. */
export async function blobPlace(layout: StoreLayout, key: ContentKey, made?: (dir: string) => void): Promise<BlobPlace> {
  blobPath(layout, key);
  const base = (await layout.algoAt(key.algo, { create: true, made })) as string;
  return { base, shown: path.join(layout.blobs, key.algo), segs: [key.hex.slice(0, 2)], name: key.hex };
}

/**
 * Run `fn` with the folder of `key`'s blob held (STORE/blobs/<algo>/<xx>, each level opened
 * without following a symlink below the held blobs folder): the blob's name in it is
 * `${at}/${key.hex}`. `create` makes missing folders, and tells `made` of each new entry's folder.
 */
export async function inBlobDir<T>(layout: StoreLayout, key: ContentKey, fn: (at: string) => Promise<T>, opts: { create?: boolean; made?: ((dir: string) => void) | undefined } = {}): Promise<T> {
  blobPath(layout, key);
  const base = await layout.algoAt(key.algo, opts);
  if (base === undefined) throw Object.assign(new Error(`ENOENT: no such directory, ${path.join(layout.blobs, key.algo)}`), { code: 'ENOENT' });
  return inDir(base, [key.hex.slice(0, 2)], fn, { shown: path.join(layout.blobs, key.algo), create: opts.create, made: opts.made });
}

/**
 * A content key's path in the store. Keys are checked where remote answers are read; this is the
 * second check, where the path is made: whatever slipped through cannot name another file.
 */
export function blobPath(layout: StoreLayout, key: ContentKey): string {
  const k: { readonly algo: unknown; readonly hex: unknown } = key;
  if (!isContentKey(k)) throw unsafeKey(`${shown(k.algo)} content id ${shown(k.hex)}`);
  return path.join(layout.blobs, key.algo, key.hex.slice(0, 2), key.hex);
}

/** A name in STORE/tmp or STORE/leases made from a key name: only a key name will do. */
export function checkKeyName(name: string): string {
  if (!KEY_NAME.test(name)) throw unsafeKey(`key name ${shown(name)}`);
  return name;
}

function unsafeKey(what: string): ModelsyncError {
  return new ModelsyncError('E_PATH_UNSAFE', `refusing ${what} as a name in the store: not a sha256 (64 lowercase hex) or git blob id (40)`);
}

/**
 * Open the store: hold its root and folders, create them if needed, check (or write) its layout
 * version. A store inside `modelsDir` (the default MODELS/.modelsync-store) is reached from the
 * models dir one folder at a time, none of them a symlink: the models dir is writable by
 * ComfyUI and its custom nodes, and a planted `.modelsync-store -> /etc` must not get the
 * store. A store elsewhere is the operator's path, opened as given.
 */
export async function openStore(root: string, opts: { modelsDir?: string | undefined } = {}): Promise<StoreLayout> {
  const held: HeldDir[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(held.splice(0).map((h) => h.close().catch(() => undefined)));
  };
  try {
    const top = await holdRoot(root, opts.modelsDir);
    held.push(top);
    const rootAt = top.at;
    const file = path.join(rootAt, 'layout.json');
    let raw: string | undefined;
    try {
      raw = await withReopen(() => readFile(file, 'utf8'));
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
    if (raw !== undefined) checkVersion(root, raw);
    // Only once the version is known to be ours: a newer store is refused without a byte written.
    const dirs = await Promise.all(['blobs', 'tmp', 'leases', 'refs'].map((d) => holdDir(rootAt, [d], { shown: root, create: true }).catch((e: unknown) => Promise.reject(e instanceof ModelsyncError ? e : unwritableError(e, root, 'store')))));
    held.push(...dirs);
    const [blobs, tmp, leases, refs] = dirs.map((d) => d.at) as [string, string, string, string];
    if (raw === undefined) {
      // Two nodes creating the store at once both write the same content.
      try {
        await writeJsonAtomic(file, { layout: LAYOUT_VERSION });
      } catch (e) {
        throw unwritableError(e, root, 'store');
      }
    }
    const algos = new Map<string, Promise<HeldDir>>();
    const algoAt: StoreLayout['algoAt'] = async (algo, o = {}) => {
      let h = algos.get(algo);
      if (!h) {
        h = holdDir(blobs, [algo], { shown: path.join(root, 'blobs'), create: o.create, made: o.made });
        algos.set(algo, h);
        h.then((d) => held.push(d), () => algos.delete(algo));
      }
      try {
        return (await h).at;
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT') throw e;
        if (!o.create) return undefined;
        // A look without create failed first, concurrently: this one makes it.
        return (await holdDir(blobs, [algo], { shown: path.join(root, 'blobs'), create: true, made: o.made }).then((d) => (held.push(d), d))).at;
      }
    };
    return { ...storeLayout(root), at: { root: rootAt, blobs, tmp, leases, refs }, algoAt, close };
  } catch (e) {
    await close();
    throw e;
  }
}

async function holdRoot(root: string, modelsDir: string | undefined): Promise<HeldDir> {
  const rel = modelsDir === undefined ? undefined : path.relative(modelsDir, root);
  try {
    if (rel !== undefined && rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)) return await holdDir(modelsDir as string, rel.split(path.sep), { create: true });
    await mkdir(root, { recursive: true });
    return await holdDir(root, []);
  } catch (e) {
    // A read-only models dir (or store): Node's recursive mkdir then says ENOENT, not EROFS.
    throw e instanceof ModelsyncError ? e : unwritableError(e, root, 'store');
  }
}

function checkVersion(root: string, raw: string): void {
  let version: unknown;
  try {
    version = (JSON.parse(raw) as { layout?: unknown }).layout;
  } catch (e) {
    throw new ModelsyncError('E_STORE_LAYOUT', `store ${root} has an unreadable layout.json`, { cause: e });
  }
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    throw new ModelsyncError('E_STORE_LAYOUT', `store ${root} has a layout.json without a valid layout version (${JSON.stringify(version) ?? 'none'}); refusing to touch it`);
  }
  if (version > LAYOUT_VERSION) {
    throw new ModelsyncError('E_STORE_LAYOUT', `store ${root} has layout ${String(version)}, newer than this modelsync understands (${LAYOUT_VERSION}); upgrade modelsync`);
  }
}
