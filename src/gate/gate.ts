import { createServer, ServerResponse, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { GateSettings } from '../config.js';
import type { ComfyPhase } from '../daemon/state.js';
import { isLoopbackHost, requireTokenBeyondLoopback } from '../daemon/request-guard.js';
import { ModelsyncError, errnoCode } from '../errors.js';
import type { Logger } from '../log.js';
import { GateAuth } from './gate-auth.js';
import { answerNotReady, refuseUpgrade, retryAfterSeconds } from './not-ready.js';
import { createRelay, pathOf, type Relay } from './relay.js';
import { routePath } from './route-path.js';

/** What the gate does with POST /prompt (prompt-gate.ts); without one, prompts are relayed as they come. */
export interface PromptHandler {
  handle(req: IncomingMessage, res: ServerResponse, path: string, target: string, auth: GateAuth): void;
}

/** The experimental frontend download API (frontend-downloads.ts), behind --gate-frontend-downloads. */
export interface FrontendHandler {
  /** Answers this request itself (an /api/download path): true when it did. */
  handle(req: IncomingMessage, res: ServerResponse, path: string, auth: GateAuth): boolean;
  /** Takes this websocket handshake (a message-level relay of /ws): true when it did. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, path: string, target: string): boolean;
}

export interface GateDeps {
  readonly settings: GateSettings;
  /** MODELSYNC_CONTROL_TOKEN: required beyond loopback, as for the control API. */
  readonly token: string | undefined;
  /** ComfyUI's base URL once known; its phase decides whether requests go through. */
  readonly comfy: () => { readonly url: string | undefined; readonly phase: ComfyPhase };
  readonly log: Logger;
  readonly prompts?: PromptHandler | undefined;
  readonly frontend?: FrontendHandler | undefined;
  /** The prompt handler's counters, shown with the gate's own. */
  readonly promptStats?: PromptStats | undefined;
  /** Run when the gate closes (the prompt handler's pins and watch). */
  readonly onClose?: (() => void) | undefined;
}

export interface PromptStats {
  promptsRelayed: number;
  promptsRefused: number;
  /** Relayed prompts whose models are pinned now. */
  readonly pinnedPrompts: number;
}

export interface GateStats {
  url: string;
  requests: number;
  relayed: number;
  notReady: number;
  websockets: number;
  openConnections: number;
  readonly prompts: PromptStats | undefined;
}

export interface Gate {
  readonly url: string;
  readonly stats: GateStats;
  close(): Promise<void>;
}

/**
 * The front door in front of ComfyUI (`modelsync run --gate HOST:PORT`). It listens from the
 * daemon's start, so a client never meets a refused connection: while ComfyUI is not answering
 * (models still syncing, starting, restarting, in backoff) it answers 503 with Retry-After.
 * Once ComfyUI runs, every request and websocket is relayed to it (relay.ts), except POST
 * /prompt and /api/prompt, whose models are seen to first (prompt-gate.ts), and, with
 * --gate-frontend-downloads, the frontend's download API (frontend-downloads.ts).
 */
export async function startGate(d: GateDeps): Promise<Gate> {
  const { host, port } = d.settings;
  requireTokenBeyondLoopback(host, port, d.token, '--gate');
  const auth = new GateAuth(host, d.token);
  const relay: Relay = createRelay(d.log, (req, res, why) => {
    if (res instanceof ServerResponse) {
      if (res.headersSent) res.destroy();
      else answerNotReady(req, res, d.comfy().phase === 'running' ? 'running' : d.comfy().phase);
    } else {
      refuseUpgrade(res, 503, retryAfterSeconds(d.comfy().phase));
    }
    d.log.debug({ path: pathOf(req), why }, 'gate: ComfyUI did not answer');
  });
  // Upgraded sockets leave the HTTP server's books: closing it does not end them.
  const upgraded = new Set<Duplex>();
  const stats: GateStats = { url: '', requests: 0, relayed: 0, notReady: 0, websockets: 0, openConnections: 0, prompts: d.promptStats };

  const server = createServer((req, res) => {
    stats.requests++;
    const path = routePath(req.url);
    if (auth.handleLogin(req, res, path)) return;
    if (d.frontend?.handle(req, res, path, auth) === true) return;
    const comfy = d.comfy();
    if (comfy.phase !== 'running' || comfy.url === undefined) {
      stats.notReady++;
      answerNotReady(req, res, comfy.phase);
      return;
    }
    if (req.method === 'POST' && (path === '/prompt' || path === '/api/prompt') && d.prompts) {
      d.prompts.handle(req, res, path, comfy.url, auth);
      return;
    }
    stats.relayed++;
    auth.stripCredentials(req);
    relay.web(req, res, comfy.url);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    stats.requests++;
    socket.on('error', () => undefined);
    const comfy = d.comfy();
    if (comfy.phase !== 'running' || comfy.url === undefined) {
      stats.notReady++;
      refuseUpgrade(socket, 503, retryAfterSeconds(comfy.phase));
      return;
    }
    stats.websockets++;
    upgraded.add(socket);
    socket.once('close', () => {
      stats.websockets--;
      upgraded.delete(socket);
    });
    auth.stripCredentials(req);
    const path = routePath(req.url);
    if (d.frontend?.upgrade(req, socket, head, path, comfy.url) === true) return;
    relay.ws(req, socket, head, comfy.url);
  });
  server.on('connection', (s: Socket) => {
    stats.openConnections++;
    s.once('close', () => stats.openConnections--);
  });
  // Uploads and downloads through the gate take as long as they take; ComfyUI's own server sets
  // no limit either. Heads must still arrive in time (headersTimeout, Node's default).
  server.requestTimeout = 0;

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => {
      const code = errnoCode(e);
      const why = code === 'EADDRINUSE' ? ' (is ComfyUI itself on that port? give it another one, e.g. -- python main.py --port 8188, and the gate the public one)' : '';
      reject(new ModelsyncError('E_DAEMON', `cannot serve the gate on ${host}:${port}: ${code ?? String(e)}${why}`, { cause: e }));
    });
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  stats.url = url;
  d.log.info({ url, bearerRequired: d.token !== undefined, loopback: isLoopbackHost(host), frontendDownloads: d.settings.frontendDownloads }, 'gate listening');
  return {
    url,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        d.onClose?.();
        server.close(() => resolve());
        server.closeIdleConnections();
        for (const s of upgraded) s.destroy();
        // Relayed requests still open get a moment, then go.
        setTimeout(() => server.closeAllConnections(), 1000).unref();
      }),
  };
}
