import type { Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import type { ChunkMap } from './chunks.js';

/**
 * sha256 is sequential but chunks land out of order: hash the contiguous prefix as it grows,
 * reading it back from the page cache just behind the write frontier, so the digest is ready
 * moments after the last byte instead of a second full pass later.
 */
export class PrefixHasher {
  private frontier = 0;
  private wake: (() => void) | undefined;
  private stopped = false;

  constructor(
    private readonly fh: FileHandle,
    private readonly map: ChunkMap,
    private readonly hash: Hash,
  ) {}

  /** Bytes hashed so far. */
  get hashed(): number {
    return this.frontier;
  }

  notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  stop(): void {
    this.stopped = true;
    this.notify();
  }

  /** Resolves with the hex digest once every byte is hashed; undefined if stopped first. */
  async run(): Promise<string | undefined> {
    const buf = Buffer.allocUnsafe(1024 * 1024);
    while (!this.stopped) {
      const limit = this.map.contiguousEnd();
      if (this.frontier >= this.map.size) return this.hash.digest('hex');
      if (limit <= this.frontier) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      const want = Math.min(buf.length, limit - this.frontier);
      const { bytesRead } = await this.fh.read(buf, 0, want, this.frontier);
      if (bytesRead === 0) throw new Error(`partial file shorter than its journal at ${this.frontier}`);
      this.hash.update(buf.subarray(0, bytesRead));
      this.frontier += bytesRead;
    }
    return undefined;
  }
}
