/** chunkSizeFor and ChunkMap (transfer/chunks.ts): how a file is cut, and which of its bytes are on disk. */
import { describe, expect, it } from 'vitest';
import { ChunkMap, MIN_CHUNK_SIZE, MIN_STEAL, chunkSizeFor } from '../src/transfer/chunks.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe('chunkSizeFor', () => {
  it('is size / 64 in whole MiB, at least 4 MiB, at most --chunk-size', () => {
    const max = 32 * MiB;
    expect(chunkSizeFor(0, max)).toBe(4 * MiB);
    expect(chunkSizeFor(1, max)).toBe(4 * MiB);
    expect(chunkSizeFor(100e6, max)).toBe(4 * MiB);
    expect(chunkSizeFor(256 * MiB + 1, max)).toBe(5 * MiB);
    expect(chunkSizeFor(GiB, max)).toBe(16 * MiB);
    expect(chunkSizeFor(GiB + 1, max)).toBe(17 * MiB);
    expect(chunkSizeFor(2 * GiB, max)).toBe(32 * MiB);
    expect(chunkSizeFor(20 * GiB, max)).toBe(32 * MiB);
  });

  it('a --chunk-size below 4 MiB wins over the floor', () => {
    expect(chunkSizeFor(GiB, 128 * KiB)).toBe(128 * KiB);
    expect(chunkSizeFor(10, MIN_CHUNK_SIZE)).toBe(MIN_CHUNK_SIZE);
  });
});

describe('ChunkMap', () => {
  it('cuts a file into chunks, the last one short', () => {
    const m = new ChunkMap(10, 4);
    expect(m.count).toBe(3);
    expect([0, 1, 2].map((i) => [m.start(i), m.length(i)])).toEqual([
      [0, 4],
      [4, 4],
      [8, 2],
    ]);
    expect(m.complete()).toBe(false);
  });

  it('an empty file is one empty chunk, complete at once', () => {
    const m = new ChunkMap(0, 4);
    expect(m.count).toBe(1);
    expect(m.length(0)).toBe(0);
    expect(m.done(0)).toBe(true);
    expect(m.complete()).toBe(true);
    expect(m.contiguousEnd()).toBe(0);
  });

  it('the contiguous end stops at the first hole and moves on as it fills', () => {
    const m = new ChunkMap(10, 4, [4, 3, 2]);
    expect(m.contiguousEnd()).toBe(7);
    expect(m.bytesOnDisk()).toBe(9);
    expect(m.done(1)).toBe(false);
    m.written[1] = 4;
    expect(m.contiguousEnd()).toBe(10);
    expect(m.complete()).toBe(true);
  });

  it('a journal that claims more than a chunk holds, or more chunks than the file has, is cut to the file', () => {
    const m = new ChunkMap(10, 4, [9, 4, 99, 7, 7]);
    expect(m.written).toEqual([4, 4, 2]);
    expect(m.bytesOnDisk()).toBe(10);
    expect(new ChunkMap(10, 4, [1]).written).toEqual([1, 0, 0]);
  });
});

describe('ChunkMap pieces and work stealing', () => {
  it('hands out the missing part of each chunk in offset order, then nothing but splits', () => {
    const m = new ChunkMap(12 * MiB, 4 * MiB, [MiB, 0, 4 * MiB]);
    const a = m.next();
    const b = m.next();
    expect([a?.start, a?.end, b?.start, b?.end]).toEqual([MiB, 4 * MiB, 4 * MiB, 8 * MiB]);
    // Chunk 2 is done: what is left is a split of the piece with the most left (b, 4 MiB), at its middle.
    const c = m.next();
    expect([c?.start, c?.end, b?.end]).toEqual([6 * MiB, 8 * MiB, 6 * MiB]);
  });

  it('splits from where the running piece stands (its write in flight included), on a page boundary', () => {
    const m = new ChunkMap(4 * MiB, 4 * MiB);
    const a = m.next();
    if (!a) throw new Error('no piece');
    m.wrote(a, 1000);
    a.reserved = 1000 + 5000;
    const t = m.next();
    expect(t?.start).toBe(Math.floor((6000 + (4 * MiB - 6000) / 2) / 4096) * 4096);
    expect(t?.start ?? 0).toBeGreaterThan(a.reserved);
    expect(a.end).toBe(t?.start);
    expect(t?.end).toBe(4 * MiB);
  });

  it('a stolen piece counts toward the chunk only once the piece before it reaches it', () => {
    const m = new ChunkMap(4 * MiB, 4 * MiB);
    const a = m.next();
    const t = m.next();
    if (!a || !t) throw new Error('no piece');
    m.wrote(t, t.end - t.start);
    expect(m.written[0]).toBe(0);
    expect(m.contiguousEnd()).toBe(0);
    m.wrote(a, a.end - a.start - 1);
    expect(m.written[0]).toBe(a.end - 1);
    m.wrote(a, 1);
    expect(m.written[0]).toBe(4 * MiB);
    expect(m.complete()).toBe(true);
  });

  it('leaves pieces with less than 2 x MIN_STEAL alone', () => {
    const m = new ChunkMap(2 * MIN_STEAL, 4 * MiB);
    const a = m.next();
    if (!a) throw new Error('no piece');
    m.wrote(a, 1);
    expect(m.next()).toBeUndefined();
    expect(a.end).toBe(2 * MIN_STEAL);
  });

  it('a resumed chunk is split from its journaled prefix on', () => {
    const m = new ChunkMap(8 * MiB, 8 * MiB, [6 * MiB]);
    const a = m.next();
    const t = m.next();
    expect([a?.start, t?.start, t?.end]).toEqual([6 * MiB, 7 * MiB, 8 * MiB]);
    if (!t) throw new Error('no piece');
    m.wrote(t, MiB);
    expect(m.written[0]).toBe(6 * MiB);
  });
});
