/**
 * SerialWriter: a file's chunks are written one write at a time (issue 15: parallel buffered
 * writes to one inode only spin on its lock), each in full, in any order of positions.
 */
import { mkdtemp, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SerialWriter } from '../src/transfer/serial-writer.js';

let root: string | undefined;
afterEach(async () => {
  if (root) await rm(root, { recursive: true, force: true });
  root = undefined;
});

/** The real file's write, watched: how many are in flight at once, and short writes on demand. */
function watched(fh: FileHandle, maxPerCall = Infinity): { write: FileHandle['write']; peak: () => number; calls: () => number } {
  let inFlight = 0;
  let peak = 0;
  let calls = 0;
  const write = (async (buf: Buffer, off: number, len: number, pos: number) => {
    calls++;
    inFlight++;
    peak = Math.max(peak, inFlight);
    try {
      return await fh.write(buf, off, Math.min(len, maxPerCall), pos);
    } finally {
      inFlight--;
    }
  }) as FileHandle['write'];
  return { write, peak: () => peak, calls: () => calls };
}

describe('SerialWriter', () => {
  it('writes blocks asked for at once one at a time, each at its place', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-serial-'));
    const file = path.join(root, 'part');
    const fh = await open(file, 'w+');
    try {
      const w = watched(fh);
      const writer = new SerialWriter(w);
      const blocks = Array.from({ length: 16 }, (_, i) => Buffer.alloc(4096, i));
      // Out of order, as chunks of several connections land.
      await Promise.all(blocks.map((_, i) => (i * 7) % 16).map((i) => writer.write(blocks[i] as Buffer, i * 4096)));
      expect(w.peak()).toBe(1);
      expect(await readFile(file)).toEqual(Buffer.concat(blocks));
    } finally {
      await fh.close();
    }
  });

  it('finishes a short write before the next one starts', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-serial-'));
    const file = path.join(root, 'part');
    const fh = await open(file, 'w+');
    try {
      const w = watched(fh, 1000);
      const writer = new SerialWriter(w);
      const a = Buffer.alloc(2500, 0x61);
      const b = Buffer.alloc(2500, 0x62);
      await Promise.all([writer.write(a, 0), writer.write(b, 2500)]);
      expect(w.calls()).toBe(6);
      expect(w.peak()).toBe(1);
      expect(await readFile(file)).toEqual(Buffer.concat([a, b]));
    } finally {
      await fh.close();
    }
  });

  it('a failed write fails its caller only; the writes queued behind it still run', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-serial-'));
    const file = path.join(root, 'part');
    const fh = await open(file, 'w+');
    const ro = await open(file, 'r');
    try {
      // Writing through a read-only handle is a real EBADF from the kernel.
      let first = true;
      const writer = new SerialWriter({
        write: ((...args: Parameters<FileHandle['write']>) => {
          const via = first ? ro : fh;
          first = false;
          return (via.write as (...a: unknown[]) => unknown)(...args);
        }) as FileHandle['write'],
      });
      const failed = writer.write(Buffer.from('xx'), 0).then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e.code,
      );
      const next = writer.write(Buffer.from('yy'), 2);
      expect(await failed).toBe('EBADF');
      await next;
      expect((await readFile(file)).subarray(2).toString()).toBe('yy');
    } finally {
      await ro.close();
      await fh.close();
    }
  });
});
