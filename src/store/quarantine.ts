import { randomBytes } from 'node:crypto';
import { link, lstat, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { keyName, type ContentKey } from '../content-key.js';
import { errnoCode } from '../errors.js';
import { entryIn, inDir } from '../fs/held-dir.js';
import { inBlobDir, type StoreLayout } from './layout.js';

/**
 * Move a blob that does not hash to its address out of `blobs/`, into STORE/quarantine as
 * `<key>.<ms>.<random>`: never served again, never silently kept, kept as evidence until gc's
 * temp sweep. Published hard links keep the bad inode until their next publish replaces them.
 * Both folders are held for the move (fs/held-dir.ts): neither may be a symlink.
 *
 * Only the inode that was hashed goes: a peer may have committed a good copy under the name since
 * (it hashed its bytes before its commit). A rename moves whatever the name holds, so the moved
 * inode is checked, and a good copy moved by mistake is linked back (a link never replaces what a
 * third writer committed meanwhile). Returns the quarantine path (as shown), or undefined when
 * the name no longer held the bad inode.
 */
export async function quarantineBlob(store: StoreLayout, key: ContentKey, bad: { readonly dev: string; readonly ino: string }): Promise<string | undefined> {
  const isBad = async (p: string): Promise<boolean> => {
    const st = await lstat(p, { bigint: true }).catch((e: unknown) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
    return st !== undefined && String(st.dev) === bad.dev && String(st.ino) === bad.ino;
  };
  const name = `${keyName(key)}.${Date.now()}.${randomBytes(4).toString('hex')}`;
  return inBlobDir(store, key, async (shardAt) => {
    const blob = entryIn(shardAt, key.hex);
    if (!(await isBad(blob))) return undefined;
    return inDir(
      store.at.root,
      ['quarantine'],
      async (qAt) => {
        const aside = entryIn(qAt, name);
        try {
          await rename(blob, aside);
        } catch (e) {
          if (errnoCode(e) === 'ENOENT') return undefined;
          throw e;
        }
        if (await isBad(aside)) return path.join(store.quarantine, name);
        await link(aside, blob).catch((e: unknown) => (errnoCode(e) === 'EEXIST' ? undefined : Promise.reject(e)));
        await unlink(aside);
        return undefined;
      },
      { create: true, shown: store.root },
    );
  });
}
