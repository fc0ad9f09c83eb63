import { request } from 'node:http';
import type { ControlConfig } from '../config.js';
import { ModelsyncError } from '../errors.js';

export interface ControlAnswer {
  readonly url: string;
  readonly status: number;
  readonly body: string;
}

/** The address to reach a daemon listening on `host` (a wildcard is reached on loopback). */
export function controlBaseUrl(config: Pick<ControlConfig, 'control'>): string {
  let host = config.control.host;
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  if (host === '::') host = '::1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.control.port}`;
}

/** Errors that mean "nobody listens there": the caller falls back to working in-process. */
const NO_DAEMON = new Set(['ECONNREFUSED', 'ENOENT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ECONNRESET']);

/** A daemon's answer is a few kilobytes to a few megabytes (/status of a big manifest); beyond this it is not one. */
export const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

export interface ControlRequestOptions {
  readonly connectTimeoutMs?: number;
  readonly answerTimeoutMs?: number;
  /** A JSON body (POST /models). */
  readonly json?: unknown;
  /** An answer longer than this is cut off and refused (E_DAEMON): memory stays bounded whatever listens. */
  readonly maxBytes?: number;
  /** Aborting it drops the request (the caller stopped waiting). */
  readonly signal?: AbortSignal | undefined;
}

/** The headers every request to the daemon carries; the token never appears anywhere else. */
export function controlHeaders(config: Pick<ControlConfig, 'control'>, accept: string): Record<string, string> {
  const headers: Record<string, string> = { accept };
  if (config.control.token !== undefined) headers.authorization = `Bearer ${config.control.token}`;
  return headers;
}

/** A 401: a daemon runs there, and the token is missing or wrong. */
export function tokenRefused(config: Pick<ControlConfig, 'control'>, url: string): ModelsyncError {
  const why = config.control.token === undefined ? "requires a token: set MODELSYNC_CONTROL_TOKEN to the daemon's" : "refused MODELSYNC_CONTROL_TOKEN: it is not the daemon's";
  return new ModelsyncError('E_AUTH', `the daemon at ${url} ${why}`, { url, status: 401 });
}

/**
 * One request to a running daemon's control API, with MODELSYNC_CONTROL_TOKEN when set (a 401
 * is an error: a daemon runs there, so the caller must not fall back to working alone). Resolves undefined when no daemon answers
 * (nothing listens, or no connection within `connectTimeoutMs`); once connected it waits for the
 * answer for up to `answerTimeoutMs` (0: as long as it takes: a resync may download for hours).
 */
export function controlRequest(config: Pick<ControlConfig, 'control'>, method: 'GET' | 'POST', path: string, opts: ControlRequestOptions = {}): Promise<ControlAnswer | undefined> {
  const url = controlBaseUrl(config) + path;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 1000;
  const answerTimeoutMs = opts.answerTimeoutMs ?? 0;
  const maxBytes = opts.maxBytes ?? MAX_ANSWER_BYTES;
  return new Promise((resolve, reject) => {
    let connected = false;
    const headers = controlHeaders(config, 'application/json');
    const body = opts.json === undefined ? undefined : JSON.stringify(opts.json);
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(body));
    }
    const req = request(url, { method, agent: false, headers, ...(opts.signal ? { signal: opts.signal } : {}) }, (res) => {
      if (res.statusCode === 401) {
        res.resume();
        reject(tokenRefused(config, url));
        return;
      }
      // The API's own 403 (the on-demand policy) is JSON; the request guard's is not.
      if (res.statusCode === 403 && !/^application\/json/i.test(res.headers['content-type'] ?? '')) {
        res.resume();
        reject(new ModelsyncError('E_DAEMON', `the daemon at ${url} refused the request (HTTP 403): it answers only to the address it is bound to, localhost or a loopback address`, { url, status: 403 }));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > maxBytes) {
          req.destroy();
          reject(new ModelsyncError('E_DAEMON', `${url} answered with more than ${maxBytes} bytes: not a modelsync daemon (is --control pointing at something else?)`, { url }));
          return;
        }
        chunks.push(d);
      });
      res.once('end', () => resolve({ url, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.once('error', (e) => reject(new ModelsyncError('E_DAEMON', `the daemon at ${url} broke off its answer: ${e.message}`, { cause: e })));
    });
    const connectTimer = setTimeout(() => {
      if (!connected) req.destroy(Object.assign(new Error('connect timeout'), { code: 'ECONNREFUSED' }));
    }, connectTimeoutMs);
    req.once('socket', (socket) => {
      socket.once('connect', () => {
        connected = true;
        clearTimeout(connectTimer);
        if (answerTimeoutMs > 0) req.setTimeout(answerTimeoutMs, () => req.destroy(Object.assign(new Error('no answer'), { code: 'ETIMEDOUT' })));
      });
    });
    req.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(connectTimer);
      if (!connected && NO_DAEMON.has(e.code ?? '')) resolve(undefined);
      else reject(new ModelsyncError('E_DAEMON', `the daemon at ${url} did not answer: ${e.code ?? e.message}`, { cause: e }));
    });
    req.end(body);
  });
}

/** The JSON body of a daemon's answer, refusing something else that happens to listen there. */
export function daemonJson<T>(answer: ControlAnswer): T {
  try {
    return JSON.parse(answer.body) as T;
  } catch (e) {
    throw new ModelsyncError('E_DAEMON', `${answer.url} answered HTTP ${answer.status} but not as a modelsync daemon (is --control pointing at something else?)`, { cause: e });
  }
}
