/**
 * publish() clears the temp links a killed publish left behind (test/hostile/process.test.ts);
 * nodes that share a models dir publish the same dest at the same moment (they all wait on one
 * lease and see its commit together), so clearing must never make one of them fail.
 */
import { chmod, link, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { publish } from '../../src/store/publish.js';

let dir: string | undefined;

afterEach(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

async function blobIn(root: string, name: string, content: string): Promise<string> {
  const blob = path.join(root, 'store', name);
  await mkdir(path.dirname(blob), { recursive: true });
  await writeFile(blob, content);
  await chmod(blob, 0o444);
  return blob;
}

describe('publish under concurrency (hostile-world.md, the shared volume)', () => {
  it('30 publishes of one dest at once all succeed, clear an old leftover, and leave only the dest', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-publish-'));
    const models = path.join(dir, 'models');
    const blob = await blobIn(dir, 'b1', 'weights');
    await mkdir(path.join(models, 'checkpoints'), { recursive: true });
    await link(blob, path.join(models, 'checkpoints', '.m.safetensors.modelsync-aaaaaaaaaaaa'));
    const modes = await Promise.all(Array.from({ length: 30 }, () => publish(blob, models, 'checkpoints/m.safetensors')));
    expect(modes.every((m) => m === 'hardlink' || m === 'present')).toBe(true);
    expect(await readdir(path.join(models, 'checkpoints'))).toEqual(['m.safetensors']);
    expect((await stat(path.join(models, 'checkpoints/m.safetensors'))).ino).toBe((await stat(blob)).ino);
  });

  it('two versions published to one dest at once: one of them wins whole, nothing else is left', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-publish-'));
    const models = path.join(dir, 'models');
    await mkdir(models);
    const a = await blobIn(dir, 'a', 'version a');
    const b = await blobIn(dir, 'b', 'version b');
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => publish(i % 2 === 0 ? a : b, models, 'loras/x.safetensors')));
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(await readdir(path.join(models, 'loras'))).toEqual(['x.safetensors']);
    const ino = (await stat(path.join(models, 'loras/x.safetensors'))).ino;
    expect([(await stat(a)).ino, (await stat(b)).ino]).toContain(ino);
  });
});
