/** chunkSizeFor and ChunkMap (transfer/chunks.ts): how a file is cut, and which of its bytes are on disk. */
import { describe, expect, it } from 'vitest';
import { ChunkMap, MIN_CHUNK_SIZE, chunkSizeFor } from '../src/transfer/chunks.js';

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
