const MiB = 1024 * 1024;
/** The smallest --chunk-size, and the smallest chunk a journal may describe. */
export const MIN_CHUNK_SIZE = 64 * 1024;
/** Below this a chunk's request round trip costs more than its smaller hash backlog saves. */
const MIN_CHUNK = 4 * MiB;
/**
 * Chunks per file between MIN_CHUNK and the configured largest chunk. 128 was measured too:
 * faster still on a paced 1 GiB, but 4 x 2 GB over 32 connections took 5-10 % longer.
 */
const TARGET_CHUNKS = 64;

/**
 * The chunk size of a new download of `size` bytes: size / 64 (whole MiB), at least 4 MiB and
 * at most `maxChunkSize` (--chunk-size). The hash can only follow the lowest unfinished chunk, and the
 * connections' last chunks all end together, so up to connections x chunk bytes are left to hash
 * after the last byte arrives: 0.3 s at 32 MiB over 16 connections. Smaller chunks for files
 * under 2 GiB bound that, and spread a 100 MB file over more connections than three; each
 * chunk costs a request, one round trip on a kept-alive connection, so big files keep big ones.
 * Depends on nothing but the size and the setting, and a journal keeps its own (resume never
 * changes a partial's layout).
 */
export function chunkSizeFor(size: number, maxChunkSize: number): number {
  const even = Math.ceil(size / TARGET_CHUNKS / MiB) * MiB;
  return Math.min(maxChunkSize, Math.max(MIN_CHUNK, even));
}

/**
 * Which bytes of a partial file are on disk: each chunk is filled from its start, so one counter
 * per chunk says it all. This is also what the journal persists.
 */
export class ChunkMap {
  readonly count: number;
  private frontierChunk = 0;

  constructor(
    readonly size: number,
    readonly chunkSize: number,
    readonly written: number[] = [],
  ) {
    this.count = Math.max(1, Math.ceil(size / chunkSize));
    for (let i = 0; i < this.count; i++) this.written[i] = Math.min(this.written[i] ?? 0, this.length(i));
    this.written.length = this.count;
  }

  start(i: number): number {
    return i * this.chunkSize;
  }

  length(i: number): number {
    return Math.max(0, Math.min(this.chunkSize, this.size - i * this.chunkSize));
  }

  done(i: number): boolean {
    return (this.written[i] ?? 0) >= this.length(i);
  }

  /** Bytes on disk, counted from offset 0 without a hole: what can be hashed now. */
  contiguousEnd(): number {
    while (this.frontierChunk < this.count && this.done(this.frontierChunk)) this.frontierChunk++;
    if (this.frontierChunk >= this.count) return this.size;
    return this.start(this.frontierChunk) + (this.written[this.frontierChunk] ?? 0);
  }

  bytesOnDisk(): number {
    return this.written.reduce((a, b) => a + b, 0);
  }

  complete(): boolean {
    return this.contiguousEnd() === this.size;
  }
}
