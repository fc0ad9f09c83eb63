import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isLoopbackHost } from '../daemon/request-guard.js';

/** ComfyUI's answer to one request the gate made itself, body read whole (up to a limit). */
export interface ComfyAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface ComfyCall {
  readonly method: string;
  readonly headers?: OutgoingHttpHeaders;
  readonly body?: Buffer;
  /** Most bytes of answer to read; a longer one is a failure. */
  readonly maxBytes: number;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * One request to ComfyUI whose answer the gate must read: the relayed POST /prompt (to learn
 * the prompt id it was given) and GET /queue (to learn when a prompt has run). Everything else
 * goes through the relay, streamed.
 */
export function callComfy(url: string, c: ComfyCall): Promise<ComfyAnswer> {
  const u = new URL(url);
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      u,
      {
        method: c.method,
        headers: c.headers,
        agent: false,
        // As for the relay: our own child on loopback, as a rule with a self-signed certificate.
        rejectUnauthorized: !isLoopbackHost(u.hostname),
        ...(c.timeoutMs === undefined ? {} : { timeout: c.timeoutMs }),
        ...(c.signal === undefined ? {} : { signal: c.signal }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > c.maxBytes) res.destroy(new Error(`answer longer than ${c.maxBytes} bytes`));
          else chunks.push(d);
        });
        res.once('error', reject);
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
    req.end(c.body);
  });
}
