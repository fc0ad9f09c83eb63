import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ModelsyncError } from '../src/errors.js';
import { StateDb } from '../src/state/db.js';
import { LAYOUT_VERSION, openStore } from '../src/store/layout.js';
import { REPO_ROOT, makeNode, startNode, writeManifest, type NodeDirs } from './support/cli-nodes.js';

const PRELOAD = path.join(REPO_ROOT, 'test', 'support', 'fake-statfs.mjs');

let root: string;

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-safety-'));
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function env(node: NodeDirs, extra: Record<string, string> = {}): Record<string, string> {
  // Nothing may reach the network in these tests: an unroutable endpoint makes sure of it.
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: node.stateDir, MODELSYNC_STATE_DIR: node.stateDir, HF_ENDPOINT: 'http://127.0.0.1:9', ...extra };
}

async function manifest(): Promise<string> {
  return writeManifest(path.join(root, 'manifest.json'), [{ source: 'hf://acme/x/model.safetensors', dest: 'checkpoints/model.safetensors' }]);
}

describe('the state DB stays on a local file system', () => {
  it.each([
    [0x6969, 'NFS'],
    [0xff534d42, 'CIFS'],
    [0xfe534d42, 'SMB2'],
    [0x65735546, 'FUSE'],
  ])('StateDb.open refuses a state dir whose statfs type is 0x%s (%s)', (type, name) => {
    const dir = path.join(root, 'state');
    let err: unknown;
    try {
      StateDb.open(dir, { statfsType: type }).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ModelsyncError);
    expect((err as ModelsyncError).code).toBe('E_STATE_DIR');
    expect((err as ModelsyncError).exitCode).toBe(2);
    expect((err as ModelsyncError).message).toContain(name);
    expect((err as ModelsyncError).message).toContain(dir);
    // Refused before anything was created there.
    expect(existsSync(dir)).toBe(false);
  });

  it('opens on a local file system (ext4)', () => {
    StateDb.open(path.join(root, 'state'), { statfsType: 0xef53 }).close();
  });

  it('the CLI prints one clear line and exits 2 when the state dir is on NFS', async () => {
    const node = await makeNode(root, 'n');
    const store = path.join(root, 'store');
    // An NFS mount at root/nfs; the state dir inside it does not exist yet.
    const mount = path.join(root, 'nfs');
    await mkdir(mount);
    const stateDir = path.join(mount, 'modelsync');
    const args = ['sync', '--manifest', await manifest(), '--models-dir', node.modelsDir, '--store-dir', store, '--state-dir', stateDir];
    const r = await startNode(node, args, env(node, { FAKE_STATFS_PREFIX: mount, MODELSYNC_STATE_DIR: stateDir }), ['--import', PRELOAD]).done;
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toEqual([`modelsync: state dir ${stateDir} is on NFS: SQLite needs a local file system (use --state-dir on local disk; the store may stay on the shared volume)`]);
    // Refused before the state dir, the store or the models dir was touched.
    expect(await readdir(mount)).toEqual([]);
    await expect(readdir(store)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(node.modelsDir)).toEqual([]);
  });
});

describe('the store layout is versioned', () => {
  it('refuses a store written by a newer layout, without writing a byte into it', async () => {
    const store = path.join(root, 'store');
    await mkdir(store);
    await writeFile(path.join(store, 'layout.json'), '{"layout": 99}\n');
    await expect(openStore(store)).rejects.toMatchObject({ code: 'E_STORE_LAYOUT' });
    expect(await readdir(store)).toEqual(['layout.json']);
    expect(await readFile(path.join(store, 'layout.json'), 'utf8')).toBe('{"layout": 99}\n');
  });

  it.each([['{"layout": "1"}'], ['{}'], ['not json']])('refuses a layout.json it cannot read (%s)', async (raw) => {
    const store = path.join(root, 'store');
    await mkdir(store);
    await writeFile(path.join(store, 'layout.json'), raw);
    await expect(openStore(store)).rejects.toMatchObject({ code: 'E_STORE_LAYOUT' });
    expect(await readdir(store)).toEqual(['layout.json']);
  });

  it('writes its own version into a new store, and opens it again', async () => {
    const store = path.join(root, 'store');
    await (await openStore(store)).close();
    expect(JSON.parse(await readFile(path.join(store, 'layout.json'), 'utf8'))).toEqual({ layout: LAYOUT_VERSION });
    expect((await readdir(store)).sort()).toEqual(['blobs', 'layout.json', 'leases', 'refs', 'tmp']);
    await (await openStore(store)).close();
  });

  it('sync and gc refuse a newer store with one line, and leave it as it was', async () => {
    const node = await makeNode(root, 'n');
    const store = path.join(root, 'store');
    await mkdir(store);
    await writeFile(path.join(store, 'layout.json'), '{"layout": 99}\n');
    for (const args of [
      ['sync', '--manifest', await manifest()],
      ['gc', '--grace-period', '0'],
    ]) {
      const r = await startNode(node, [...args, '--models-dir', node.modelsDir, '--store-dir', store], env(node)).done;
      expect(r.code).toBe(1);
      expect(r.stderr.trimEnd().split('\n')).toEqual([`modelsync: store ${store} has layout 99, newer than this modelsync understands (${LAYOUT_VERSION}); upgrade modelsync`]);
      expect(await readdir(store)).toEqual(['layout.json']);
      expect(await readdir(node.modelsDir)).toEqual([]);
    }
  });
});
