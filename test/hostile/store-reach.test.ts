/**
 * Issue 13, class 2: nothing under the store is reachable from a manifest. Dot names are reserved
 * in `dest` and `folders:` (the default store is MODELS/.modelsync-store), and a store or state
 * dir placed in the models dir anywhere but under a dot name is refused at start (exit 2), so no
 * dest can overwrite a verified blob that every models dir on the volume publishes.
 * Property test of the validator: test/dest-property.test.ts.
 */
import { mkdir, readdir, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, sandbox, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { makeSafetensors } from '../support/hub.js';
import { exists, fileSha256, sha256 } from '../support/models.js';

const good = makeSafetensors(150_000, 31);
// The same size as `good`, other bytes: what a hostile manifest would put in its place.
const evil = makeSafetensors(150_000, 32);
let web: ByteServer;
let sb: Sandbox;

beforeAll(async () => {
  web = await startByteServer({ files: { '/good.safetensors': good, '/evil.safetensors': evil } });
});
afterAll(async () => {
  await web.close();
});
afterEach(async () => {
  await sb?.cleanup();
});

const goodEntry = (dest = 'checkpoints/good.safetensors'): Record<string, unknown> => ({ source: `${web.url}/good.safetensors`, dest, sha256: sha256(good) });

/** Where `good`'s blob lives under a store. */
function blobRel(): string {
  return `blobs/sha256/${sha256(good).slice(0, 2)}/${sha256(good)}`;
}

describe('the store out of a manifest\'s reach (issue 13, class 2)', () => {
  it('folders: [.modelsync-store] and a dest onto a committed blob: exit 2, the blob untouched, a second models dir still gets the right bytes', async () => {
    sb = await sandbox();
    const store = path.join(sb.models, '.modelsync-store');
    await sb.writeManifest([goodEntry()]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    const blob = path.join(store, blobRel());
    const inode = (await stat(blob)).ino;

    await sb.writeManifest([{ source: `${web.url}/evil.safetensors`, dest: `.modelsync-store/${blobRel()}`, sha256: sha256(evil) }], { folders: ['.modelsync-store'] });
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/folders\.0: must be a plain folder name, not starting with "\."/);
    expect(web.requests.filter((q) => q.path === '/evil.safetensors')).toEqual([]);
    expect((await stat(blob)).ino).toBe(inode);
    expect(await fileSha256(blob)).toBe(sha256(good));

    // Another models dir on the same store publishes the store's bytes: they must be the right ones.
    const other = path.join(sb.dir, 'models-b');
    await mkdir(other);
    await sb.writeManifest([goodEntry()]);
    const b = await runCli(['sync', '--models-dir', other, '--store-dir', store], sb.env({ MODELSYNC_STATE_DIR: path.join(sb.dir, 'state-b') }));
    expect(b.code).toBe(0);
    expect(await fileSha256(path.join(other, 'checkpoints/good.safetensors'))).toBe(sha256(good));
  });

  it.each([
    'checkpoints/.hidden/x.safetensors',
    'checkpoints/.x.safetensors',
    'checkpoints/.good.safetensors.modelsync-0123456789ab',
    '.modelsync-store/blobs/x',
    'loras/.. /x.safetensors',
  ])('a dest with a dot-named segment (%j) is refused at load, exit 2, nothing written', async (dest) => {
    sb = await sandbox();
    await sb.writeManifest([goodEntry(dest)]);
    const asked = web.requests.length;
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/models\[0\]\.dest: .*dot names are reserved/);
    expect(await readdir(sb.models)).toEqual([]);
    expect(web.requests.length).toBe(asked);
  });

  it('a --store-dir inside a models folder is refused at start (exit 2): a dest there would overwrite its blobs', async () => {
    sb = await sandbox();
    const store = path.join(sb.models, 'checkpoints', 'store');
    await sb.writeManifest([goodEntry()]);
    // Today's first sync would work; the attack is the second manifest, whose dest is a blob.
    await sb.writeManifest([{ source: `${web.url}/evil.safetensors`, dest: `checkpoints/store/${blobRel()}`, sha256: sha256(evil) }, goodEntry()]);
    const r = await runCli(['sync', '--store-dir', store], sb.env());
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`the store dir ${store} is in the models dir ${sb.models} (at "checkpoints/store")`);
    expect(await exists(path.join(sb.models, 'checkpoints'))).toBe(false);
    expect(await exists(sb.state)).toBe(false);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  });

  it('a store reached through a symlink into the models dir, a state dir in a models folder, or a models dir in the store: exit 2', async () => {
    sb = await sandbox();
    await sb.writeManifest([goodEntry()]);
    await mkdir(path.join(sb.models, 'loras'));
    const link = path.join(sb.dir, 'store-link');
    await symlink(path.join(sb.models, 'loras'), link);
    const viaLink = await runCli(['sync', '--store-dir', path.join(link, 'store')], sb.env());
    expect(viaLink.code).toBe(2);
    expect(viaLink.stderr).toContain('(at "loras/store")');

    const stateInModels = await runCli(['sync'], sb.env({ MODELSYNC_STATE_DIR: path.join(sb.models, 'configs', 'state') }));
    expect(stateInModels.code).toBe(2);
    expect(stateInModels.stderr).toContain('the state dir');

    const modelsInStore = await runCli(['sync', '--store-dir', sb.dir], sb.env());
    expect(modelsInStore.code).toBe(2);
    expect(modelsInStore.stderr).toContain('is inside the store dir');
    expect(await readdir(path.join(sb.models, 'loras'))).toEqual([]);
  });

  it('a store (and a state dir) under a dot-folder anywhere in the models dir is accepted and works', async () => {
    sb = await sandbox();
    const store = path.join(sb.models, 'checkpoints', '.store');
    await sb.writeManifest([goodEntry()]);
    const r = await runCli(['sync', '--store-dir', store], sb.env({ MODELSYNC_STATE_DIR: path.join(sb.models, '.state') }));
    expect(r.code).toBe(0);
    const report = await checkFinalPaths(sb.models, { 'checkpoints/good.safetensors': sha256(good) }, store);
    expect(report.corrupt).toEqual([]);
    expect(report.blobs).toBe(1);
  });
});
