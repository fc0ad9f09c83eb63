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
 * The least a piece split off a running one may hold, and so the least a running piece keeps:
 * the thief pays a request (a round trip, the server's time to first byte) before its first
 * byte, about what 1 MiB takes at a CDN's 25 MB/s per connection.
 */
export const MIN_STEAL = 1 * MiB;
/** Split points fall on page boundaries, so that no page of the partial is written by two requests. */
const SPLIT_ALIGN = 4096;

/**
 * A range of the partial one request fills from its start: the missing part of a chunk, or the
 * back part split off a running piece of it (see ChunkMap.next).
 */
export class Piece {
  /** The next byte to write. */
  pos: number;
  /** End of the block being written now (past `pos` while a write is in flight): a split never cuts below it. */
  reserved: number;
  /** A lane is working on it (or waiting to retry it). */
  owned = false;

  constructor(
    readonly chunk: number,
    readonly start: number,
    /** Exclusive; lowered when the back part is split off. */
    public end: number,
  ) {
    this.pos = this.reserved = start;
  }

  get left(): number {
    return this.end - Math.max(this.pos, this.reserved);
  }
}

/**
 * Which bytes of a partial file are on disk, and which requests are filling which ranges.
 * `written[i]` is what chunk i holds from its start without a hole: what the journal persists
 * and the hash follows. A stolen piece's bytes count there only once the piece before it
 * reaches them, so a crash before that loses them (they are fetched again), never trusts a hole.
 */
export class ChunkMap {
  readonly count: number;
  private frontierChunk = 0;
  /** Pieces by chunk, in offset order; made on the first `next()`. */
  private pieces: Piece[][] | undefined;
  /** What each chunk held from its start when the pieces were made. */
  private base: number[] = [];

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

  /** Pieces still to fill at the start: one per unfinished chunk. */
  get missing(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (!this.done(i)) n++;
    return n;
  }

  /**
   * Work for a connection that just freed up: the lowest piece nobody works on, or else the back
   * half of the running piece with the most left (aria2c's trick: the last wave of a file must
   * not run on a few connections while the others idle). The running piece's request stops at
   * the split; its connection is closed there, since its answer goes on past it. Undefined when
   * nothing is left worth a request.
   */
  next(): Piece | undefined {
    const all = this.allPieces();
    for (const list of all) {
      for (const p of list) {
        if (!p.owned && p.pos < p.end) {
          p.owned = true;
          return p;
        }
      }
    }
    let victim: Piece | undefined;
    for (const list of all) for (const p of list) if (p.owned && p.pos < p.end && (victim === undefined || p.left > victim.left)) victim = p;
    if (victim === undefined || victim.left < 2 * MIN_STEAL) return undefined;
    const from = Math.max(victim.pos, victim.reserved);
    const mid = Math.floor((from + (victim.end - from) / 2) / SPLIT_ALIGN) * SPLIT_ALIGN;
    const thief = new Piece(victim.chunk, mid, victim.end);
    thief.owned = true;
    victim.end = mid;
    const list = all[victim.chunk] as Piece[];
    list.splice(list.indexOf(victim) + 1, 0, thief);
    return thief;
  }

  /** `n` bytes were written at `piece.pos`. */
  wrote(piece: Piece, n: number): void {
    piece.pos += n;
    piece.reserved = Math.max(piece.reserved, piece.pos);
    const i = piece.chunk;
    let reach = this.start(i) + (this.base[i] ?? 0);
    for (const p of this.allPieces()[i] ?? []) {
      if (p.start > reach) break;
      reach = Math.max(reach, p.pos);
    }
    this.written[i] = reach - this.start(i);
  }

  private allPieces(): Piece[][] {
    if (this.pieces === undefined) {
      this.base = [...this.written];
      this.pieces = this.written.map((w, i) => (this.done(i) ? [] : [new Piece(i, this.start(i) + w, this.start(i) + this.length(i))]));
    }
    return this.pieces;
  }
}
