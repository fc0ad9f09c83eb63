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
  /** A read-back is under way: bytes offered meanwhile are left to it. */
  private reading = false;

  constructor(
    private readonly fh: FileHandle,
    private readonly map: ChunkMap,
    private readonly hash: Hash,
  ) {}

  /** Bytes hashed so far. */
  get hashed(): number {
    return this.frontier;
  }

  /**
   * Bytes just written at `at`, still in memory. When they extend the hashed prefix (a file that
   * comes over one connection always does) they are hashed from here and never read back.
   */
  offer(piece: Buffer, at: number): void {
    if (this.reading || this.stopped || at !== this.frontier) return;
    this.hash.update(piece);
    this.frontier += piece.length;
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
    let buf: Buffer | undefined;
    while (!this.stopped) {
      const limit = this.map.contiguousEnd();
      if (this.frontier >= this.map.size) return this.hash.digest('hex');
      if (limit <= this.frontier) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      buf ??= Buffer.allocUnsafe(1024 * 1024);
      const want = Math.min(buf.length, limit - this.frontier);
      this.reading = true;
      const { bytesRead } = await this.fh.read(buf, 0, want, this.frontier).finally(() => (this.reading = false));
      if (bytesRead === 0) throw new Error(`partial file shorter than its journal at ${this.frontier}`);
      this.hash.update(buf.subarray(0, bytesRead));
      this.frontier += bytesRead;
    }
    return undefined;
  }
}
