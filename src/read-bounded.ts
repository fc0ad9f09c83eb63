import { closeSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';

/**
 * A text file read to its end or to `max` bytes, whichever comes first: a file from outside
 * (a manifest, a workflow) may be huge, or endless (`/dev/zero`, a FIFO that never ends), and
 * must not take all memory before it is refused. Most are small: one 64 KiB buffer serves
 * them, growing only for the rare big one.
 */
class Bounded {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private n = 0;

  constructor(
    private readonly max: number,
    private readonly tooBig: () => Error,
  ) {}

  /** Where the next read goes; throws once the file is past the limit. */
  room(): { buf: Buffer; at: number; len: number } {
    if (this.n === this.buf.length) {
      if (this.n > this.max) throw this.tooBig();
      const bigger = Buffer.allocUnsafe(Math.min(this.buf.length * 4, this.max + 1));
      this.buf.copy(bigger, 0, 0, this.n);
      this.buf = bigger;
    }
    return { buf: this.buf, at: this.n, len: this.buf.length - this.n };
  }

  /** False at end of file. */
  got(bytes: number): boolean {
    this.n += bytes;
    return bytes > 0;
  }

  text(): string {
    if (this.n > this.max) throw this.tooBig();
    return this.buf.toString('utf8', 0, this.n);
  }
}

export async function readBounded(file: string, max: number, tooBig: () => Error): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const b = new Bounded(max, tooBig);
    for (;;) {
      const r = b.room();
      if (!b.got((await fh.read(r.buf, r.at, r.len, null)).bytesRead)) return b.text();
    }
  } finally {
    await fh.close();
  }
}

/** readBounded, synchronously (the warm start's small reads, where a thread-pool round trip costs more). */
export function readBoundedSync(file: string, max: number, tooBig: () => Error): string {
  const fd = openSync(file, 'r');
  try {
    const b = new Bounded(max, tooBig);
    for (;;) {
      const r = b.room();
      if (!b.got(readSync(fd, r.buf, r.at, r.len, null))) return b.text();
    }
  } finally {
    closeSync(fd);
  }
}
