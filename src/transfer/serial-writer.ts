import type { FileHandle } from 'node:fs/promises';

/** The most bytes one write gathers from queued blocks that continue each other. */
const MAX_GATHER = 2 * 1024 * 1024;

interface Queued {
  readonly buf: Buffer;
  readonly pos: number;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

/**
 * Positional writes to one file, one at a time, each to its full length. A buffered write holds
 * the inode's lock while it copies into the page cache, so the chunks of one file cannot be
 * written in parallel anyway: with one write per connection in flight, libuv's threads waited
 * for each other spinning on that lock (~4 % of a 1 GiB download's CPU on loopback, `perf
 * record`). Other files' writes still run beside these.
 *
 * While a write runs, the blocks asked for meanwhile queue; the next write takes the oldest and
 * every queued block that continues it on either side (a connection's two receive blocks, end to
 * end), as one writev: past 16 connections the receive blocks halve (receive-buffers.ts), and each block was a
 * write of its own, a thread-pool hand-off and a syscall.
 */
export class SerialWriter {
  private readonly queue: Queued[] = [];
  private running = false;

  constructor(private readonly fh: Pick<FileHandle, 'write' | 'writev'>) {}

  /** Write all of `buf` at `pos`, once every write asked before it has been started. */
  write(buf: Buffer, pos: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ buf, pos, resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    for (let first = this.queue.shift(); first !== undefined; first = this.queue.shift()) {
      const batch = this.gather(first);
      try {
        if (batch.length === 1) await writeAll(this.fh, first.buf, first.pos);
        else await writevAll(this.fh, batch.map((q) => q.buf), (batch[0] as Queued).pos);
        for (const q of batch) q.resolve();
      } catch (e) {
        // None of the batch is known written: each of its callers has the error.
        for (const q of batch) q.reject(e);
      }
    }
    this.running = false;
  }

  /** `first` and the queued blocks that continue it either way, in file order, up to MAX_GATHER bytes. */
  private gather(first: Queued): Queued[] {
    const batch = [first];
    let start = first.pos;
    let end = first.pos + first.buf.length;
    let bytes = first.buf.length;
    for (let i = 0; i < this.queue.length && bytes < MAX_GATHER; ) {
      const q = this.queue[i] as Queued;
      const after = q.pos === end;
      const before = q.pos + q.buf.length === start;
      if ((!after && !before) || bytes + q.buf.length > MAX_GATHER) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      if (after) {
        batch.push(q);
        end += q.buf.length;
      } else {
        batch.unshift(q);
        start = q.pos;
      }
      bytes += q.buf.length;
      // A block queued earlier may continue the one just taken: look again from the start.
      i = 0;
    }
    return batch;
  }
}

async function writeAll(fh: Pick<FileHandle, 'write'>, buf: Buffer, pos: number): Promise<void> {
  for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off, pos + off)).bytesWritten;
}

/** Buffers that lie end to end from `pos`, all of them, however short each writev is. */
async function writevAll(fh: Pick<FileHandle, 'writev'>, bufs: Buffer[], pos: number): Promise<void> {
  let rest = bufs;
  let at = pos;
  while (rest.length > 0) {
    let n = (await fh.writev(rest, at)).bytesWritten;
    at += n;
    const left: Buffer[] = [];
    for (const b of rest) {
      if (n >= b.length) n -= b.length;
      else {
        left.push(n > 0 ? b.subarray(n) : b);
        n = 0;
      }
    }
    rest = left;
  }
}
