/** Longest chunk-size or trailer line we wait for before calling the body broken. */
const MAX_LINE = 4096;

export interface Decoded {
  /** First raw byte not consumed (an incomplete line waits here for more bytes). */
  readonly scan: number;
  /** End of the decoded body bytes, which are compacted in place towards the start. */
  readonly out: number;
  readonly ended: boolean;
}

/**
 * `Transfer-Encoding: chunked` decoded in place: body bytes are moved left over the framing, so
 * the buffer the socket read into is also the buffer handed out. It keeps only its position in
 * the framing; a line cut by the end of the bytes so far is left unconsumed and re-read later.
 */
export class ChunkedDecoder {
  private state: 'size' | 'data' | 'crlf' | 'trailer' = 'size';
  private left = 0;

  /** Decode raw bytes [scan, fill) of `buf`, appending body bytes at `out`; a string says what is wrong. */
  decode(buf: Buffer, scan: number, fill: number, out: number): Decoded | string {
    while (scan < fill) {
      if (this.state === 'data') {
        const n = Math.min(this.left, fill - scan);
        if (out !== scan) buf.copy(buf, out, scan, scan + n);
        out += n;
        scan += n;
        this.left -= n;
        if (this.left === 0) this.state = 'crlf';
        continue;
      }
      const rel = buf.subarray(scan, fill).indexOf('\r\n');
      if (rel < 0) {
        if (fill - scan > MAX_LINE) return 'framing line too long';
        break;
      }
      const line = buf.toString('latin1', scan, scan + rel);
      scan += rel + 2;
      if (this.state === 'crlf') {
        if (line !== '') return 'no CRLF after chunk data';
        this.state = 'size';
      } else if (this.state === 'trailer') {
        if (line === '') return { scan, out, ended: true };
      } else {
        const m = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(line);
        if (!m?.[1]) return `bad chunk size "${line.slice(0, 20)}"`;
        this.left = Number.parseInt(m[1], 16);
        this.state = this.left === 0 ? 'trailer' : 'data';
      }
    }
    return { scan, out, ended: false };
  }
}
