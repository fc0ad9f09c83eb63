import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ModelsyncError, errnoCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { OnDemandService } from '../ondemand/service.js';
import { EventStreams, type EventStreamOptions } from './event-stream.js';
import { renderMetrics } from './metrics.js';
import { getJob, postModels } from './models-api.js';
import { RequestGuard, answerRefusal, isLoopbackHost, requireTokenBeyondLoopback } from './request-guard.js';
import { notReadySentence } from './readiness.js';
import type { DaemonState } from './state.js';
import { statusDocument } from './status-document.js';
import type { SyncOutcome } from './sync-runner.js';

export interface ControlApi {
  readonly state: DaemonState;
  /** Re-read the manifest and sync now (after any sync in progress); resolves when done. */
  resync(): Promise<SyncOutcome>;
  /** Look at the disk for the models ComfyUI is serving, before readiness is answered. */
  checkServed?(): Promise<void>;
  /** POST /models, GET /models/jobs/ID and GET /events; without it they answer 404. */
  readonly onDemand?: OnDemandService | undefined;
  /** GET /events' heartbeat and per-client buffer bound (tests shorten the heartbeat). */
  readonly events?: EventStreamOptions | undefined;
}

export interface ControlAddress {
  readonly host: string;
  readonly port: number;
  /** MODELSYNC_CONTROL_TOKEN; required beyond loopback. */
  readonly token?: string | undefined;
}

export interface ControlServer {
  readonly url: string;
  close(): Promise<void>;
}

/** Probes (kubelet, Docker HEALTHCHECK) cannot carry a secret: these answer without the token. */
const PUBLIC_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz']);

/**
 * The control API: GET /healthz, /readyz, /status, /metrics, POST /resync, and the on-demand
 * POST /models, GET /models/jobs/ID, GET /events (docs/daemon.md), for this machine's own callers only (request-guard.ts): a foreign Host or Origin is refused, and with
 * MODELSYNC_CONTROL_TOKEN set so is every request without it (beyond loopback it must be set).
 */
export async function startControl(at: ControlAddress, api: ControlApi, log: Logger): Promise<ControlServer> {
  const { host, port, token } = at;
  requireTokenBeyondLoopback(host, port, token, '--control');
  let lastWarn = -Infinity;
  const guard = new RequestGuard({ host, token, publicPaths: PUBLIC_PATHS });
  const streams = new EventStreams(api.events);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const verdict = guard.check(req, path);
    if (!verdict.ok) {
      // A web page probing the port, or a caller without the token. The reason quotes the one
      // refused value (never the Authorization header).
      // At most one warning per 10 s: a page in a browser can send thousands.
      const now = performance.now();
      const level = now - lastWarn >= 10_000 ? 'warn' : 'debug';
      if (level === 'warn') lastWarn = now;
      log[level]({ method: req.method, path: path.slice(0, 100), status: verdict.status, reason: verdict.reason }, 'control API request refused');
      req.resume();
      answerRefusal(res, verdict);
      return;
    }
    handle(req, res, api, path, token === undefined || verdict.authenticated, streams).catch((e: unknown) => {
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
  log.info({ url, bearerRequired: token !== undefined, loopback: isLoopbackHost(host) }, 'control API listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        streams.closeAll();
        server.closeIdleConnections();
        // Requests still open (a resync that is being cancelled) get a moment to answer.
        setTimeout(() => server.closeAllConnections(), 1000).unref();
      }),
  };
}

/** `detail`: the caller may see which models are missing (no token configured, or it sent it). */
async function handle(req: IncomingMessage, res: ServerResponse, api: ControlApi, path: string, detail: boolean, streams: EventStreams): Promise<void> {
  const read = req.method === 'GET' || req.method === 'HEAD';
  const s = api.state;
  if (read && (path === '/readyz' || path === '/status' || path === '/metrics')) await api.checkServed?.();
  switch (path) {
    case '/healthz':
      if (!read) return notAllowed(res, 'GET, HEAD');
      return s.healthy() ? send(res, 200, 'text/plain', 'ok\n') : send(res, 503, 'text/plain', `degraded: ComfyUI is crash-looping (${s.comfy.restarts} restarts so far)\n`);
    case '/readyz':
      if (!read) return notAllowed(res, 'GET, HEAD');
      return s.ready() ? send(res, 200, 'text/plain', 'ready\n') : send(res, 503, 'text/plain', `not ready: ${notReadySentence(s, detail)}\n`);
    case '/status':
      if (!read) return notAllowed(res, 'GET, HEAD');
      return send(res, 200, 'application/json', `${JSON.stringify(statusDocument(s), null, 2)}\n`);
    case '/metrics':
      if (!read) return notAllowed(res, 'GET, HEAD');
      return send(res, 200, 'text/plain; version=0.0.4; charset=utf-8', renderMetrics(s));
    case '/resync': {
      if (req.method !== 'POST') return notAllowed(res, 'POST');
      req.resume();
      const outcome = await api.resync();
      return send(res, outcome.ok ? 200 : 500, 'application/json', `${JSON.stringify(outcome, null, 2)}\n`);
    }
    case '/models':
      if (!api.onDemand) break;
      if (req.method !== 'POST') return notAllowed(res, 'POST');
      return postModels(req, res, api.onDemand);
    case '/events':
      if (!api.onDemand) break;
      if (req.method !== 'GET') return notAllowed(res, 'GET');
      return streams.serve(req, res, api.onDemand);
    default:
      if (api.onDemand && path.startsWith('/models/jobs/')) {
        if (req.method !== 'GET') return notAllowed(res, 'GET');
        return getJob(res, path.slice('/models/jobs/'.length), api.onDemand);
      }
  }
  req.resume();
  return send(res, 404, 'text/plain', 'not found: try /healthz, /readyz, /status, /metrics, POST /resync, POST /models or /events\n');
}

function notAllowed(res: ServerResponse, allow: string): void {
  res.setHeader('allow', allow);
  send(res, 405, 'text/plain', 'method not allowed\n');
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
