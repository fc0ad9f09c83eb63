import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ComfyPhase } from '../daemon/state.js';
import { comfyError } from './comfy-errors.js';

/** Seconds to come back after: models take long, a (re)start of ComfyUI a few seconds. */
export function retryAfterSeconds(phase: ComfyPhase): number {
  return phase === 'waiting-for-models' || phase === 'none' ? 10 : 3;
}

const WHY: Record<ComfyPhase, string> = {
  none: 'ComfyUI is not started yet',
  'waiting-for-models': 'ComfyUI starts once its required models are verified',
  starting: 'ComfyUI is starting',
  running: 'ComfyUI did not answer; it may be restarting',
  unresponsive: 'ComfyUI is not answering and is being restarted',
  backoff: 'ComfyUI exited and is restarted after a pause',
  stopping: 'ComfyUI is stopping',
  exited: 'ComfyUI exited',
};

/**
 * 503 with Retry-After while ComfyUI cannot answer: a page in a browser gets a small page that
 * reloads itself, anything else ComfyUI's error shape.
 */
export function answerNotReady(req: IncomingMessage, res: ServerResponse, phase: ComfyPhase): void {
  const retry = retryAfterSeconds(phase);
  const why = WHY[phase];
  req.resume();
  const html = req.method === 'GET' && /\btext\/html\b/.test(req.headers.accept ?? '');
  const body = html
    ? `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="${retry}"><title>ComfyUI is not ready</title><p>${why}. This page reloads in ${retry} s.</p>\n`
    : `${JSON.stringify(comfyError('comfyui_not_ready', why, `phase: ${phase}`))}\n`;
  res.writeHead(503, {
    'content-type': html ? 'text/html; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(body),
    'retry-after': String(retry),
    'cache-control': 'no-store',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** The same for a websocket handshake: an HTTP answer on the raw socket, then close. */
export function refuseUpgrade(socket: Duplex, status: 401 | 403 | 503, retryAfter?: number): void {
  const reason = status === 503 ? 'Service Unavailable' : status === 401 ? 'Unauthorized' : 'Forbidden';
  const extra = retryAfter === undefined ? '' : `Retry-After: ${retryAfter}\r\n`;
  socket.end(`HTTP/1.1 ${status} ${reason}\r\n${extra}Connection: close\r\nContent-Length: 0\r\n\r\n`);
  socket.once('error', () => undefined);
}
