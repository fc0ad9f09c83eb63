import { StringDecoder } from 'node:string_decoder';

/** Longest line kept whole; a child printing megabytes without a newline is cut into pieces. */
const MAX_LINE = 64 * 1024;

/**
 * How a line ended: `\n`, `\r\n`, a lone `\r` (a progress bar redrawing itself), or '' for a
 * piece cut at MAX_LINE or the last bytes before the stream ended without a newline.
 */
export type LineEnd = '\n' | '\r\n' | '\r' | '';

/**
 * Splits a byte stream into lines, keeping each line's own ending so that output can be passed
 * on unchanged. A UTF-8 character split across chunks stays whole; a `\r` at the end of a chunk
 * waits for the next one (it may be half of a `\r\n`); whatever is left comes out at `end()`.
 */
export function lineSplitter(onLine: (line: string, end: LineEnd) => void): { write(chunk: Buffer): void; end(): void } {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  const push = (text: string, final: boolean): void => {
    pending += text;
    let from = 0;
    const eol = /\r\n|\n|\r/g;
    for (let m = eol.exec(pending); m !== null; m = eol.exec(pending)) {
      // A lone '\r' as the last character may be the start of '\r\n': decide with the next chunk.
      if (m[0] === '\r' && m.index === pending.length - 1 && !final) break;
      onLine(pending.slice(from, m.index), m[0] as LineEnd);
      from = m.index + m[0].length;
    }
    pending = pending.slice(from);
    while (pending.length > MAX_LINE) {
      onLine(pending.slice(0, MAX_LINE), '');
      pending = pending.slice(MAX_LINE);
    }
  };
  return {
    write(chunk) {
      push(decoder.write(chunk), false);
    },
    end() {
      push(decoder.end(), true);
      if (pending !== '') onLine(pending, '');
      pending = '';
    },
  };
}
