/**
 * Reading a manifest and its lock (manifest/files.ts) and the validated-manifest cache
 * (manifest/cache.ts): the warm path's zod-free half of getting a manifest.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ModelsyncError } from '../src/errors.js';
import { lookUpFiles, lookUpManifest, rememberManifest } from '../src/manifest/cache.js';
import { lockPathFor, readManifestFiles, readManifestFilesSync, type ManifestFiles } from '../src/manifest/files.js';
import { parseManifest } from '../src/manifest/load.js';

const TEXT = 'version: 1\nmodels:\n  - source: hf://org/name/model.safetensors\n    dest: checkpoints/m.safetensors\n    required: false\n';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-manifest-files-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof ModelsyncError ? e.code : `not a ModelsyncError: ${String(e)}`;
  }
  return undefined;
}

describe('manifest files', () => {
  it('names the lock file beside its manifest', () => {
    expect(lockPathFor('/etc/modelsync/manifest.yaml')).toBe('/etc/modelsync/manifest.lock.json');
    expect(lockPathFor('/a/b.YML')).toBe('/a/b.lock.json');
    expect(lockPathFor('/x/models.json')).toBe('/x/models.lock.json');
    expect(lockPathFor('/x/no-ext')).toBe('/x/no-ext.lock.json');
    expect(lockPathFor('/x/y.lock.yaml')).toBe('/x/y.lock.lock.json');
  });

  it('reads the manifest and its lock, sync and async alike; no lock file is undefined, an empty one is text', async () => {
    const file = path.join(dir, 'm.yaml');
    await writeFile(file, TEXT);
    const none: ManifestFiles = { path: file, lockPath: path.join(dir, 'm.lock.json'), manifest: TEXT, lock: undefined };
    expect(await readManifestFiles(file)).toEqual(none);
    expect(readManifestFilesSync(file)).toEqual(none);
    await writeFile(none.lockPath, '');
    expect(await readManifestFiles(file)).toEqual({ ...none, lock: '' });
    expect(readManifestFilesSync(file)).toEqual({ ...none, lock: '' });
  });

  it('an unreadable manifest or lock is bad usage (E_USAGE) with the file named, sync and async alike', async () => {
    const missing = path.join(dir, 'missing.yaml');
    expect(codeOf(() => readManifestFilesSync(missing))).toBe('E_USAGE');
    await expect(readManifestFiles(missing)).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringContaining(missing) });
    const file = path.join(dir, 'm.yaml');
    await writeFile(file, TEXT);
    // A folder where the lock file should be: not ENOENT, so not "no lock".
    await mkdir(lockPathFor(file));
    expect(codeOf(() => readManifestFilesSync(file))).toBe('E_USAGE');
    await expect(readManifestFiles(file)).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringContaining(lockPathFor(file)) });
  });

  it('caches a validated manifest under its exact text and its lock: no lock file and an empty one are different keys', async () => {
    const file = path.join(dir, 'm.yaml');
    const m = parseManifest(TEXT, file);
    const files: ManifestFiles = { path: file, lockPath: lockPathFor(file), manifest: TEXT, lock: undefined };
    const miss = lookUpFiles(dir, files);
    expect(miss.cached).toBeUndefined();
    await rememberManifest(dir, miss, m);
    expect(lookUpFiles(dir, files).cached).toEqual(JSON.parse(JSON.stringify(m)));
    expect(lookUpFiles(dir, { ...files, manifest: `${TEXT}\n` }).cached).toBeUndefined();
    expect(lookUpFiles(dir, { ...files, lock: '{}' }).cached).toBeUndefined();
    expect(lookUpFiles(dir, { ...files, lock: '' }).cached).toBeUndefined();
    expect(lookUpFiles(dir, { ...files, path: path.join(dir, 'other.yaml') }).cached).toBeUndefined();
  });

  it('looks a manifest up from its files on disk; a cache it cannot read is a miss, and one it cannot write costs nothing', async () => {
    const file = path.join(dir, 'm.yaml');
    await writeFile(file, TEXT);
    const state = path.join(dir, 'state');
    const first = lookUpManifest(state, file);
    expect(first.cached).toBeUndefined();
    // No state dir yet: the write fails, quietly.
    await rememberManifest(state, first, parseManifest(TEXT, file));
    expect(lookUpManifest(state, file).cached).toBeUndefined();
    await writeFile(path.join(dir, 'manifest-cache.json'), '{"key": ');
    expect(lookUpManifest(dir, file).cached).toBeUndefined();
    await rememberManifest(dir, lookUpManifest(dir, file), parseManifest(TEXT, file));
    expect(lookUpManifest(dir, file).cached?.entries).toHaveLength(1);
  });
});
