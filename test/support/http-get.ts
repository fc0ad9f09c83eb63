import { request, type IncomingHttpHeaders } from 'node:http';

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Set when the connection broke before the body ended; `body` then holds what arrived. */
  error: Error | undefined;
}

/**
 * A bare node:http request that follows no redirects and never throws on a broken body, so
 * specs can look at exactly what a server put on the wire.
 */
export function rawRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: { 'accept-encoding': 'identity', ...opts.headers }, agent: false });
    // After the head has arrived, a request error (our timeout, a reset) is reported in `error`.
    let responded = false;
    let failure: Error | undefined;
    req.setTimeout(opts.timeoutMs ?? 5000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => {
      failure ??= e;
      if (!responded) reject(e);
    });
    req.on('response', (res) => {
      responded = true;
      const chunks: Buffer[] = [];
      let resError: Error | undefined;
      const done = (): void => {
        const error = res.complete ? undefined : (failure ?? resError ?? new Error('response body ended early'));
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), error });
      };
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => (resError = e));
      res.on('end', done);
      res.on('close', done);
    });
    req.end(opts.body);
  });
}
