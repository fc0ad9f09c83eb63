import type { IncomingMessage } from 'node:http';

export type BodyRead = Buffer | 'too-large' | 'aborted';

/**
 * A request body the gate must read whole (a prompt, a download request, a login), up to
 * `limit` bytes. Past it the rest is left unread rather than drained: the caller answers 413 (or
 * 400) with Connection: close, and the socket ends there, so a huge upload is neither held in
 * memory nor waited for. (Not `for await`: leaving that loop early destroys the socket before
 * the answer is written.)
 */
export function readBody(req: IncomingMessage, limit: number): Promise<BodyRead> {
  const declared = Number(req.headers['content-length'] ?? '0');
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve('too-large');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size <= limit) return void chunks.push(c);
      req.off('data', onData);
      req.pause();
      resolve('too-large');
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', () => resolve('aborted'));
    req.once('close', () => resolve(req.complete ? Buffer.concat(chunks) : 'aborted'));
  });
}
