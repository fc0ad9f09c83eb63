/**
 * Held directories (src/fs/held-dir.ts): what the store and publish rely on to confine writes.
 * The fallback (lstat right before, where /proc/self/fd cannot be used) is tested directly.
 */
import { mkdir, mkdtemp, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HOLDS_DIRS, checkDir, entryIn, holdDir } from '../src/fs/held-dir.js';

let root: string;
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe.each([
  ['holdDir', holdDir],
  ['the lstat fallback', checkDir],
] as const)('%s', (name, hold) => {
  it('makes missing folders one level at a time and names each new entry\'s folder', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-held-'));
    const made: string[] = [];
    const d = await hold(root, ['a', 'b'], { create: true, made: (p) => made.push(p) });
    await writeFile(path.join(d.at, 'f'), 'x');
    await d.close();
    expect(made).toEqual([root, path.join(root, 'a')]);
    expect(d.shown).toBe(path.join(root, 'a', 'b'));
    expect(await readdir(path.join(root, 'a', 'b'))).toEqual(['f']);
  });

  it('refuses a symlink below the base, at any level, and a file where a folder should be', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-held-'));
    await mkdir(path.join(root, 'outside'));
    await mkdir(path.join(root, 'a'));
    await symlink(path.join(root, 'outside'), path.join(root, 'a', 'b'));
    await writeFile(path.join(root, 'file'), 'x');
    await expect(hold(root, ['a', 'b'], { create: true })).rejects.toMatchObject({ code: 'E_PATH_UNSAFE', message: expect.stringContaining('is a symlink') });
    await expect(hold(root, ['file'], { create: true })).rejects.toMatchObject({ code: 'E_PATH_UNSAFE', message: expect.stringContaining('is not a directory') });
    expect(await readdir(path.join(root, 'outside'))).toEqual([]);
    if (name === 'holdDir') expect(HOLDS_DIRS).toBe(true);
  });

  it('refuses a segment that is not one plain name ("..", ".", empty, with "/" or NUL): nothing made or opened outside', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-held-'));
    const base = path.join(root, 'base');
    await mkdir(path.join(root, 'outside', 'deep'), { recursive: true });
    await mkdir(base);
    await symlink(path.join(root, 'outside'), path.join(base, 'link'));
    for (const segs of [['..', 'escaped'], ['a', '..', '..', 'escaped'], ['.'], [''], ['link/deep'], ['a/../../escaped'], ['a\0b']]) {
      await expect(hold(base, segs, { create: true }), JSON.stringify(segs)).rejects.toMatchObject({ code: 'E_PATH_UNSAFE' });
    }
    expect((await readdir(root)).sort()).toEqual(['base', 'outside']);
    expect(await readdir(path.join(root, 'outside'))).toEqual(['deep']);
    expect(await readdir(base)).toEqual(['link']);
  });

  it('follows symlinks in the base itself: the operator\'s path', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-held-'));
    await mkdir(path.join(root, 'real', 'x'), { recursive: true });
    await symlink(path.join(root, 'real'), path.join(root, 'link'));
    const d = await hold(path.join(root, 'link'), ['x']);
    await writeFile(path.join(d.at, 'f'), 'x');
    await d.close();
    expect(await readdir(path.join(root, 'real', 'x'))).toEqual(['f']);
  });
});

describe('holdDir (held, not re-checked)', () => {
  it('a held folder swapped for a symlink still gets the writes; the symlink\'s target never does', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-held-'));
    await mkdir(path.join(root, 'outside'));
    const d = await holdDir(root, ['tmp'], { create: true });
    await rename(path.join(root, 'tmp'), path.join(root, 'tmp.moved'));
    await symlink(path.join(root, 'outside'), path.join(root, 'tmp'));
    await writeFile(path.join(d.at, 'partial'), 'bytes');
    await d.close();
    expect(await readdir(path.join(root, 'outside'))).toEqual([]);
    expect(await readdir(path.join(root, 'tmp.moved'))).toEqual(['partial']);
  });
});

describe('entryIn', () => {
  it('names one plain entry of a held folder, and refuses anything else', () => {
    expect(entryIn('/proc/self/fd/7', 'model.safetensors')).toBe('/proc/self/fd/7/model.safetensors');
    expect(entryIn('/proc/self/fd/7', '.x.modelsync-0123456789ab')).toBe('/proc/self/fd/7/.x.modelsync-0123456789ab');
    for (const name of ['', '.', '..', '../etc/passwd', 'a/b', 'a\0b']) {
      expect(() => entryIn('/proc/self/fd/7', name), JSON.stringify(name)).toThrow(expect.objectContaining({ code: 'E_PATH_UNSAFE' }));
    }
  });
});
