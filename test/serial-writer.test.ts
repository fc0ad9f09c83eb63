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

/**
 * The real file's write and writev, watched: how many are in flight at once, each call's
 * (position, length), and short writes on demand.
 */
function watched(
  fh: FileHandle,
  maxPerCall = Infinity,
): { write: FileHandle['write']; writev: FileHandle['writev']; peak: () => number; calls: () => number; log: [string, number, number][] } {
  let inFlight = 0;
  let peak = 0;
  let calls = 0;
  const log: [string, number, number][] = [];
  const track = async <T>(f: () => Promise<T>): Promise<T> => {
    calls++;
    inFlight++;
    peak = Math.max(peak, inFlight);
    try {
      return await f();
    } finally {
      inFlight--;
    }
  };
  const write = (async (buf: Buffer, off: number, len: number, pos: number) => {
    log.push(['write', pos, Math.min(len, maxPerCall)]);
    return track(() => fh.write(buf, off, Math.min(len, maxPerCall), pos));
  }) as FileHandle['write'];
  const writev = (async (bufs: Buffer[], pos: number) => {
    // A short writev: only the first maxPerCall bytes of the gathered buffers.
    const cut: Buffer[] = [];
    let room = maxPerCall;
    for (const b of bufs) {
      if (room <= 0) break;
      cut.push(b.subarray(0, Math.min(b.length, room)));
      room -= b.length;
    }
    log.push(['writev', pos, cut.reduce((a, b) => a + b.length, 0)]);
    return track(() => fh.writev(cut, pos));
  }) as FileHandle['writev'];
  return { write, writev, peak: () => peak, calls: () => calls, log };
}

/** A fresh file in the test's own folder, open for reading and writing while `use` runs. */
async function withFile(use: (fh: FileHandle, file: string) => Promise<void>): Promise<void> {
  root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-serial-'));
  const file = path.join(root, 'part');
  const fh = await open(file, 'w+');
  try {
    await use(fh, file);
  } finally {
    await fh.close();
  }
}

describe('SerialWriter', () => {
  it('writes blocks asked for at once one at a time, each at its place', async () => {
    await withFile(async (fh, file) => {
      const w = watched(fh);
      const writer = new SerialWriter(w);
      const blocks = Array.from({ length: 16 }, (_, i) => Buffer.alloc(4096, i));
      // Out of order, as chunks of several connections land.
      await Promise.all(blocks.map((_, i) => (i * 7) % 16).map((i) => writer.write(blocks[i] as Buffer, i * 4096)));
      expect(w.peak()).toBe(1);
      expect(await readFile(file)).toEqual(Buffer.concat(blocks));
    });
  });

  it('finishes a short write before the next one starts', async () => {
    await withFile(async (fh, file) => {
      const w = watched(fh, 1000);
      const writer = new SerialWriter(w);
      const a = Buffer.alloc(2500, 0x61);
      const b = Buffer.alloc(2500, 0x62);
      await Promise.all([writer.write(a, 0), writer.write(b, 2500)]);
      expect(w.calls()).toBe(6);
      expect(w.peak()).toBe(1);
      expect(await readFile(file)).toEqual(Buffer.concat([a, b]));
    });
  });

  it('a failed write fails its caller only; the writes queued behind it still run', async () => {
    await withFile(async (fh, file) => {
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
          writev: fh.writev.bind(fh),
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
      }
    });
  });

  it('blocks queued behind a running write that continue each other go out as one writev, in file order', async () => {
    await withFile(async (fh, file) => {
      const w = watched(fh);
      const writer = new SerialWriter(w);
      const block = (i: number): Buffer => Buffer.alloc(4096, i + 1);
      // Block 0 runs at once; 2 and 1 (one connection's two blocks, queued out of order) continue
      // it; 9 belongs to another chunk; 3 continues 2.
      const order = [0, 2, 9, 1, 3];
      await Promise.all(order.map((i) => writer.write(block(i), i * 4096)));
      expect(w.log).toEqual([
        ['write', 0, 4096],
        ['writev', 4096, 3 * 4096],
        ['write', 9 * 4096, 4096],
      ]);
      expect(w.peak()).toBe(1);
      const got = await readFile(file);
      for (const i of order) expect(got.subarray(i * 4096, (i + 1) * 4096).equals(block(i))).toBe(true);
    });
  });

  it('a short writev is finished to its last byte, across the buffers it cut', async () => {
    await withFile(async (fh, file) => {
      const w = watched(fh, 3000);
      const writer = new SerialWriter(w);
      const a = Buffer.alloc(2000, 0x61);
      const b = Buffer.alloc(2000, 0x62);
      const c = Buffer.alloc(2000, 0x63);
      await Promise.all([writer.write(a, 0), writer.write(b, 2000), writer.write(c, 4000)]);
      expect(w.log.filter(([k]) => k === 'writev').map(([, pos, n]) => [pos, n])).toEqual([
        [2000, 2000 + 1000],
        [5000, 1000],
      ]);
      expect(await readFile(file)).toEqual(Buffer.concat([a, b, c]));
    });
  });

  it('a gathered write that fails fails each of its callers; the writes after it still run', async () => {
    await withFile(async (fh, file) => {
      const ro = await open(file, 'r');
      try {
        // The gathered write goes through a read-only handle: a real EBADF from the kernel.
        const writer = new SerialWriter({ write: fh.write.bind(fh) as FileHandle['write'], writev: ro.writev.bind(ro) });
        const code = (p: Promise<void>): Promise<string | undefined> => p.then(() => undefined, (e: NodeJS.ErrnoException) => e.code);
        const first = writer.write(Buffer.from('aa'), 0);
        const gathered = [code(writer.write(Buffer.from('bb'), 2)), code(writer.write(Buffer.from('cc'), 4))];
        await first;
        expect(await Promise.all(gathered)).toEqual(['EBADF', 'EBADF']);
        await writer.write(Buffer.from('dd'), 6);
        expect((await readFile(file)).toString()).toBe('aa\0\0\0\0dd');
      } finally {
        await ro.close();
      }
    });
  });
});
