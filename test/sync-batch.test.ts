/**
 * SyncBatch (a sync's deferred folder fsyncs and state DB rows) and publish() within a batch:
 * real files in a temp dir, a real state DB.
 */
import { chmod, link, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock.js';
import { silentLogger } from '../src/log.js';
import { StateDb } from '../src/state/db.js';
import { PublishedTable } from '../src/state/published-table.js';
import { publish } from '../src/store/publish.js';
import { SyncBatch } from '../src/sync/sync-batch.js';

let dir: string | undefined;
let db: StateDb | undefined;

afterEach(async () => {
  try {
    db?.close();
  } catch {
    /* closed by the test */
  }
  db = undefined;
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const KEY = { algo: 'sha256', hex: 'ab'.repeat(32) } as const;
const STAMP = { dev: '1', ino: '2', size: 3, mtimeNs: '4', ctimeNs: '5' };

async function setup(limits?: { rows: number; ms: number }): Promise<{ batch: SyncBatch; db: StateDb; root: string }> {
  dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-batch-'));
  db = StateDb.open(path.join(dir, 'state'));
  return { batch: new SyncBatch(db, silentLogger(), systemClock, limits), db, root: dir };
}

async function blobIn(root: string, content: string): Promise<string> {
  const blob = path.join(root, 'store', content);
  await mkdir(path.dirname(blob), { recursive: true });
  await writeFile(blob, content);
  await chmod(blob, 0o444);
  return blob;
}

describe('SyncBatch', () => {
  it('holds state DB rows until a flush, then writes them all', async () => {
    const { batch, db: d } = await setup();
    batch.deferDirSync(os.tmpdir());
    batch.record(() => d.putVerified('/x/a', STAMP, KEY));
    const published = new PublishedTable(d, '/x');
    batch.record(() => published.put('/m.yaml', 'loras/a', 'hf://o/r/a', KEY, 3));
    expect(d.verifiedStamp('/x/a')).toBeUndefined();
    expect(published.row('loras/a', '/m.yaml')).toBeUndefined();
    await batch.finish();
    expect(d.verifiedStamp('/x/a')).toMatchObject({ ino: '2', hex: KEY.hex });
    expect(published.row('loras/a', '/m.yaml')).toMatchObject({ source: 'hf://o/r/a', size: 3 });
  });

  it('flushes by itself once enough rows wait', async () => {
    const { batch, db: d } = await setup({ rows: 3, ms: 60_000 });
    for (const n of ['a', 'b']) batch.record(() => d.putVerified(`/x/${n}`, STAMP, KEY));
    await batch.flush();
    expect(d.verifiedStamp('/x/b')).toBeDefined();
    for (const n of ['c', 'd', 'e']) batch.record(() => d.putVerified(`/x/${n}`, STAMP, KEY));
    // The third row queued a flush; the next flush runs after it.
    await batch.flush();
    expect(d.verifiedStamp('/x/e')).toBeDefined();
  });

  it('a state DB that cannot be written fails every row of the flush, through its callback', async () => {
    const { batch, db: d } = await setup();
    const failed: string[] = [];
    batch.record(
      () => new PublishedTable(d, '/x').put('/m.yaml', 'loras/a', 's', KEY, 1),
      () => failed.push('a'),
    );
    batch.record(
      () => new PublishedTable(d, '/x').put('/m.yaml', 'loras/b', 's', KEY, 1),
      () => failed.push('b'),
    );
    d.close();
    await batch.finish();
    expect(failed).toEqual(['a', 'b']);
  });
});

describe('publish within a batch', () => {
  it('a new dest is one hard link; leftover temps of the names it published are cleared once, at the end, and no others', async () => {
    const { batch, root } = await setup();
    const models = path.join(root, 'models');
    const blob = await blobIn(root, 'weights');
    await mkdir(path.join(models, 'loras'), { recursive: true });
    await link(blob, path.join(models, 'loras', '.a.safetensors.modelsync-aaaaaaaaaaaa'));
    await writeFile(path.join(models, 'loras', '.other.safetensors.modelsync-bbbbbbbbbbbb'), 'not ours to clear');
    expect(await publish(blob, models, 'loras/a.safetensors', { batch })).toBe('hardlink');
    expect(await publish(blob, models, 'loras/a.safetensors', { batch })).toBe('present');
    expect((await stat(path.join(models, 'loras/a.safetensors'))).ino).toBe((await stat(blob)).ino);
    expect((await readdir(path.join(models, 'loras'))).sort()).toEqual(['.a.safetensors.modelsync-aaaaaaaaaaaa', '.other.safetensors.modelsync-bbbbbbbbbbbb', 'a.safetensors']);
    await batch.finish();
    expect((await readdir(path.join(models, 'loras'))).sort()).toEqual(['.other.safetensors.modelsync-bbbbbbbbbbbb', 'a.safetensors']);
  });

  it('an existing dest of other content, or a planted symlink, is replaced whole, never written through', async () => {
    const { batch, root } = await setup();
    const models = path.join(root, 'models');
    const blob = await blobIn(root, 'new');
    await mkdir(path.join(models, 'loras'), { recursive: true });
    await writeFile(path.join(models, 'loras', 'old.safetensors'), 'old version');
    const outside = path.join(root, 'outside.txt');
    await writeFile(outside, 'keep me');
    await symlink(outside, path.join(models, 'loras', 'planted.safetensors'));
    expect(await publish(blob, models, 'loras/old.safetensors', { batch })).toBe('hardlink');
    expect(await publish(blob, models, 'loras/planted.safetensors', { batch })).toBe('hardlink');
    await batch.finish();
    for (const n of ['old', 'planted']) expect((await lstat(path.join(models, 'loras', `${n}.safetensors`))).ino).toBe((await stat(blob)).ino);
    expect(await readdir(path.join(models, 'loras'))).toEqual(['old.safetensors', 'planted.safetensors']);
    expect(await readFile(outside, 'utf8')).toBe('keep me');
  });

  it('a folder of the dest planted as a symlink is refused, even after other dests were published in the batch', async () => {
    const { batch, root } = await setup();
    const models = path.join(root, 'models');
    const blob = await blobIn(root, 'w');
    await mkdir(path.join(root, 'elsewhere'));
    await mkdir(models);
    await symlink(path.join(root, 'elsewhere'), path.join(models, 'vae'));
    expect(await publish(blob, models, 'loras/ok.safetensors', { batch })).toBe('hardlink');
    await expect(publish(blob, models, 'vae/x.safetensors', { batch })).rejects.toMatchObject({ code: 'E_PATH_UNSAFE' });
    await batch.finish();
    expect(await readdir(path.join(root, 'elsewhere'))).toEqual([]);
  });
});
