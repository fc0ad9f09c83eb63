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
