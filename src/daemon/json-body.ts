import type { IncomingMessage } from 'node:http';
import { ModelsyncError } from '../errors.js';

/** Deeper than any request modelsync takes; a deeper body is refused, not walked. */
const MAX_DEPTH = 32;

/** A request the API refuses as it came: its HTTP status and a stable code. */
export class BadRequest extends ModelsyncError {
  constructor(
    readonly httpStatus: 400 | 413,
    message: string,
  ) {
    super('E_USAGE', message);
  }
}

/**
 * A request's JSON body, read up to `maxBytes` (a longer one, declared or counted as it streams,
 * is refused, 413, and the rest never read: the caller answers and closes the connection),
 * parsed, and checked to nest no deeper than MAX_DEPTH.
 */
export async function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) throw new BadRequest(413, `request body of ${declared} bytes; at most ${maxBytes}`);
  const chunks: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) {
        // Read no further: the 413 goes out with "Connection: close", then the socket goes.
        req.off('data', onData);
        req.pause();
        reject(new BadRequest(413, `request body over ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve());
    req.once('error', reject);
  });
  if (size === 0) throw new BadRequest(400, 'a JSON body is required');
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new BadRequest(400, `the body is not JSON: ${e instanceof Error ? e.message.slice(0, 120) : 'unparseable'}`);
  }
  if (depth(value) > MAX_DEPTH) throw new BadRequest(400, `the body nests deeper than ${MAX_DEPTH} levels`);
  return value;
}

/** Nesting depth of a parsed JSON value, walked without recursion. */
function depth(root: unknown): number {
  let max = 0;
  const stack: { v: unknown; d: number }[] = [{ v: root, d: 0 }];
  while (stack.length > 0) {
    const { v, d } = stack.pop() as { v: unknown; d: number };
    if (v === null || typeof v !== 'object') continue;
    if (d + 1 > max) max = d + 1;
    if (max > MAX_DEPTH) return max;
    for (const child of Array.isArray(v) ? v : Object.values(v as Record<string, unknown>)) stack.push({ v: child, d: d + 1 });
  }
  return max;
}
