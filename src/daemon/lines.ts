import { StringDecoder } from 'node:string_decoder';

/** Longest line kept whole; a child printing megabytes without a newline is cut into pieces. */
const MAX_LINE = 64 * 1024;

/**
 * Splits a byte stream into lines for prefixing. A UTF-8 character split across chunks stays
 * whole; a last line without its newline comes out at `end()`.
 */
export function lineSplitter(onLine: (line: string) => void): { write(chunk: Buffer): void; end(): void } {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  const push = (text: string): void => {
    pending += text;
    let i: number;
    while ((i = pending.indexOf('\n')) >= 0) {
      onLine(pending.slice(0, i).replace(/\r$/, ''));
      pending = pending.slice(i + 1);
    }
    while (pending.length > MAX_LINE) {
      onLine(pending.slice(0, MAX_LINE));
      pending = pending.slice(MAX_LINE);
    }
  };
  return {
    write(chunk) {
      push(decoder.write(chunk));
    },
    end() {
      push(decoder.end());
      if (pending !== '') onLine(pending);
      pending = '';
    },
  };
}
