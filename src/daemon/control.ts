import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ModelsyncError, errnoCode } from '../errors.js';
import type { Logger } from '../log.js';
import { renderMetrics } from './metrics.js';
import type { DaemonState } from './state.js';
import type { SyncOutcome } from './sync-runner.js';

export interface ControlApi {
  readonly state: DaemonState;
  /** Re-read the manifest and sync now (after any sync in progress); resolves when done. */
  resync(): Promise<SyncOutcome>;
}

export interface ControlServer {
  readonly url: string;
  close(): Promise<void>;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/**
 * The control API: GET /healthz, /readyz, /status, /metrics and POST /resync. It has no
 * authentication, which is why it listens on loopback unless told otherwise.
 */
export async function startControl(host: string, port: number, api: ControlApi, log: Logger): Promise<ControlServer> {
  const server = createServer((req, res) => {
    handle(req, res, api).catch((e: unknown) => {
      log.error({ err: e instanceof Error ? e.message : String(e), path: req.url }, 'control API request failed');
      if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n');
      else res.destroy();
    });
  });
  // A resync can take hours; the request itself is tiny.
  server.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => {
      const code = errnoCode(e);
      const why = code === 'EADDRINUSE' ? ' (is another modelsync running? pick another --control HOST:PORT)' : '';
      reject(new ModelsyncError('E_DAEMON', `cannot serve the control API on ${host}:${port}: ${code ?? String(e)}${why}`, { cause: e }));
    });
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  if (!LOOPBACK.test(host)) log.warn({ url }, 'control API listens beyond loopback: it has no authentication (POST /resync); restrict who can reach it');
  else log.info({ url }, 'control API listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // Requests still open (a resync that is being cancelled) get a moment to answer.
        setTimeout(() => server.closeAllConnections(), 1000).unref();
      }),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, api: ControlApi): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const read = req.method === 'GET' || req.method === 'HEAD';
  const s = api.state;
  switch (path) {
    case '/healthz':
      if (!read) return notAllowed(res, 'GET, HEAD');
      return s.healthy() ? send(res, 200, 'text/plain', 'ok\n') : send(res, 503, 'text/plain', `degraded: ComfyUI is crash-looping (${s.comfy.restarts} restarts)\n`);
    case '/readyz':
      if (!read) return notAllowed(res, 'GET, HEAD');
      return s.ready() ? send(res, 200, 'text/plain', 'ready\n') : send(res, 503, 'text/plain', `not ready: ${notReadyReason(s)}\n`);
    case '/status':
      if (!read) return notAllowed(res, 'GET, HEAD');
      return send(res, 200, 'application/json', `${JSON.stringify(s.snapshot(), null, 2)}\n`);
    case '/metrics':
      if (!read) return notAllowed(res, 'GET, HEAD');
      return send(res, 200, 'text/plain; version=0.0.4; charset=utf-8', renderMetrics(s));
    case '/resync': {
      if (req.method !== 'POST') return notAllowed(res, 'POST');
      req.resume();
      const outcome = await api.resync();
      return send(res, outcome.ok ? 200 : 500, 'application/json', `${JSON.stringify(outcome, null, 2)}\n`);
    }
    default:
      return send(res, 404, 'text/plain', 'not found: try /healthz, /readyz, /status, /metrics or POST /resync\n');
  }
}

function notReadyReason(s: DaemonState): string {
  if (!s.requiredReady()) {
    const waiting = [...s.entries.values()].filter((e) => e.required && !e.verified).map((e) => e.dest);
    return `required models not verified yet: ${waiting.slice(0, 5).join(', ')}${waiting.length > 5 ? `, and ${waiting.length - 5} more` : ''}`;
  }
  return `ComfyUI is ${s.comfy.phase}`;
}

function notAllowed(res: ServerResponse, allow: string): void {
  res.setHeader('allow', allow);
  send(res, 405, 'text/plain', 'method not allowed\n');
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
