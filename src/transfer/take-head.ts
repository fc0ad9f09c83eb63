import type { Half } from './receive-buffers.js';
import { parseResponseHead, type ResponseHead } from './response-head.js';

const MAX_HEAD = 64 * 1024;

/**
 * The final response head at the start of `h`'s undecoded bytes, once it is all there (1xx
 * answers such as 103 Early Hints are skipped); `h.start` then points at the body. Undefined
 * while the head is incomplete; a string says what is wrong with it.
 */
export function takeHead(h: Half): ResponseHead | string | undefined {
  for (;;) {
    const from = Math.max(h.start, h.scan - 3);
    const rel = h.buf.subarray(from, h.fill).indexOf('\r\n\r\n');
    if (rel < 0) {
      h.scan = h.fill;
      return h.fill - h.start > MAX_HEAD ? `response head over ${MAX_HEAD} bytes` : undefined;
    }
    const end = from + rel;
    const head = end - h.start > MAX_HEAD ? `response head over ${MAX_HEAD} bytes` : parseResponseHead(h.buf.toString('latin1', h.start, end), 'GET');
    h.start = h.out = h.scan = end + 4;
    if (typeof head === 'string' || head.status >= 200) return head;
  }
}
