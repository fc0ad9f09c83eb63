import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { KEY_NAME, isContentKey, type ContentKey } from '../content-key.js';
import { ModelsyncError, errnoCode } from '../errors.js';
import { unwritableError } from '../os-errors.js';
import { writeJsonAtomic } from '../fs/atomic-write.js';
import { withReopen } from '../fs/estale.js';
import { shown } from '../remote-value.js';

/** Bumped when the on-disk layout changes incompatibly; a newer store is refused, never rewritten. */
export const LAYOUT_VERSION = 1;

export interface StoreLayout {
  readonly root: string;
  readonly blobs: string;
  readonly tmp: string;
  readonly leases: string;
  /** Per-node records of what each node's manifest references, for gc. */
  readonly refs: string;
  /** Blobs found not to hash to their address, moved aside (made when first needed). */
  readonly quarantine: string;
}

export function storeLayout(root: string): StoreLayout {
  return {
    root,
    blobs: path.join(root, 'blobs'),
    tmp: path.join(root, 'tmp'),
    leases: path.join(root, 'leases'),
    refs: path.join(root, 'refs'),
    quarantine: path.join(root, 'quarantine'),
  };
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

/** Create the store's folders and check (or write) its layout version. */
export async function openStore(root: string): Promise<StoreLayout> {
  const layout = storeLayout(root);
  const file = path.join(root, 'layout.json');
  let raw: string | undefined;
  try {
    raw = await withReopen(() => readFile(file, 'utf8'));
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  if (raw === undefined) {
    await makeFolders(layout);
    // Two nodes creating the store at once both write the same content.
    try {
      await writeJsonAtomic(file, { layout: LAYOUT_VERSION });
    } catch (e) {
      throw unwritableError(e, root, 'store');
    }
    return layout;
  }
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
  await makeFolders(layout);
  return layout;
}

/** Only once the version is known to be ours: a newer store is refused without a byte written. */
async function makeFolders(layout: StoreLayout): Promise<void> {
  try {
    await Promise.all([layout.blobs, layout.tmp, layout.leases, layout.refs].map((d) => mkdir(d, { recursive: true })));
  } catch (e) {
    // A read-only models dir (or store): Node's recursive mkdir then says ENOENT, not EROFS.
    throw unwritableError(e, layout.root, 'store');
  }
}
