/**
 * PrefixWatch looks at a first block in memory (issue 15: a small file's header check cost four
 * reads of the partial, each a thread pool round trip): the verdict is in as the block is
 * offered, without a read; anything else is still read from the partial.
 */
import { mkdtemp, open, rm, writeFile, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PrefixWatch, safetensorsPrefix } from '../src/transfer/prefix-check.js';
import { makeSafetensors } from './support/safetensors.js';

let root: string | undefined;
let fh: FileHandle | undefined;
afterEach(async () => {
  await fh?.close();
  fh = undefined;
  if (root) await rm(root, { recursive: true, force: true });
  root = undefined;
});

/** A real partial holding `content`, its reads counted. */
async function partial(content: Buffer): Promise<{ handle: FileHandle; reads: () => number }> {
  root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-prefix-'));
  const file = path.join(root, 'x.part');
  await writeFile(file, content);
  fh = await open(file, 'r');
  const real = fh;
  let reads = 0;
  const counted = new Proxy(real, {
    get(target, prop, receiver) {
      if (prop === 'read') {
        return (...args: Parameters<FileHandle['read']>) => {
          reads++;
          return (target.read as (...a: unknown[]) => ReturnType<FileHandle['read']>)(...args);
        };
      }
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { handle: counted, reads: () => reads };
}

describe('PrefixWatch.offer', () => {
  it('a first block holding the whole header decides at once, with no read of the partial', async () => {
    const file = makeSafetensors(4000, 1);
    const { handle, reads } = await partial(file);
    const check = safetensorsPrefix(file.length);
    const watch = new PrefixWatch(check, handle, () => file.length, 'hf://o/r/x.safetensors');
    watch.offer(file, 0);
    watch.notify();
    await watch.idle();
    expect(check.need).toBe(0);
    expect(watch.failed).toBeUndefined();
    expect(reads()).toBe(0);
  });

  it('a first block that is no safetensors header fails as it is offered', async () => {
    const bad = Buffer.from('<!doctype html><html>sign in to continue</html>'.padEnd(4000, ' '));
    const { handle, reads } = await partial(bad);
    const watch = new PrefixWatch(safetensorsPrefix(bad.length), handle, () => bad.length, 'hf://o/r/x.safetensors');
    watch.offer(bad, 0);
    expect(watch.failed?.code).toBe('E_CORRUPT');
    expect(reads()).toBe(0);
  });

  it('a block elsewhere in the file, or one shorter than the header, is left to the reads', async () => {
    const file = makeSafetensors(4000, 2);
    const { handle, reads } = await partial(file);
    const check = safetensorsPrefix(file.length);
    const watch = new PrefixWatch(check, handle, () => file.length, 'hf://o/r/x.safetensors');
    watch.offer(file.subarray(100), 100);
    watch.offer(file.subarray(0, 4), 0);
    expect(check.need).toBe(8);
    watch.notify();
    await watch.idle();
    expect(check.need).toBe(0);
    expect(watch.failed).toBeUndefined();
    expect(reads()).toBeGreaterThan(0);
  });
});
