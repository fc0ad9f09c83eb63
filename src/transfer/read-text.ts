import type { BodyReader } from './body-reader.js';

/**
 * A short body as text (an API answer, an error page), at most `limit` bytes: past that, what
 * came so far and `overflow: true`, the connection closed. Blocks are views into buffers the
 * reader reuses, so each is copied before the next read. `counted` is told of every block (a
 * rate floor's count).
 */
export async function readText(body: BodyReader, limit: number, counted?: (n: number) => void): Promise<{ text: string; overflow: boolean }> {
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for (let b = await body.next(); b !== null; b = await body.next()) {
      const room = limit - n;
      parts.push(Buffer.from(b.subarray(0, Math.max(0, room))));
      n += b.length;
      counted?.(b.length);
      if (n > limit) {
        body.destroy();
        return { text: Buffer.concat(parts).toString('utf8'), overflow: true };
      }
    }
  } catch (e) {
    body.destroy();
    throw e;
  }
  return { text: Buffer.concat(parts).toString('utf8'), overflow: false };
}
