import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer, type RawData } from 'ws';
import { isLoopbackHost } from '../daemon/request-guard.js';
import type { Logger } from '../log.js';
import { refuseUpgrade } from './not-ready.js';

/** What a message-level relay lets its owner see and change. */
export interface RelayHooks {
  /** A text message from ComfyUI on its way to the client: what to send instead (or the same). */
  fromComfy(text: string): string;
  /** The client's socket, once both sides are open (for messages of the gate's own). */
  opened(client: WebSocket): void;
  closed(client: WebSocket): void;
}

/** A frame ComfyUI sends is a preview image at most: far below this. */
const MAX_PAYLOAD = 64 * 1024 * 1024;
/** A client this far behind is not reading: it is dropped, and its frontend reconnects. */
const MAX_BUFFERED = 32 * 1024 * 1024;

const NOT_FORWARDED = new Set(['connection', 'upgrade', 'keep-alive', 'te', 'trailer', 'proxy-authorization', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol']);

/**
 * ComfyUI's websocket relayed message by message (the `ws` library on both sides), for what
 * --gate-frontend-downloads must see or add: the `feature_flags` answer and `download_progress`.
 * Every message is passed on as it came, text as text and binary as binary, except what
 * `fromComfy` changes. ComfyUI is connected to first, with the client's own handshake headers
 * (Host and Origin included, so ComfyUI's Origin check judges the browser, not the gate); the
 * client's handshake is completed only once ComfyUI has accepted, and ComfyUI's refusal (its 403
 * for a foreign Origin, a 503 while restarting) is the client's answer.
 */
export class MessageRelay {
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_PAYLOAD, handleProtocols: (_offered, req) => this.chosen.get(req) ?? false });
  private readonly chosen = new WeakMap<IncomingMessage, string>();

  constructor(private readonly log: Logger) {}

  relay(req: IncomingMessage, socket: Duplex, head: Buffer, target: string, hooks: RelayHooks): void {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !NOT_FORWARDED.has(k)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    const protocols = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim()).filter((p) => p !== '');
    const base = new URL(target);
    const upstream = new WebSocket(`${base.protocol === 'https:' ? 'wss' : 'ws'}://${base.host}${req.url ?? '/'}`, protocols, {
      headers,
      perMessageDeflate: false,
      maxPayload: MAX_PAYLOAD,
      handshakeTimeout: 10_000,
      rejectUnauthorized: !isLoopbackHost(base.hostname),
    });
    const early: [RawData, boolean][] = [];
    let client: WebSocket | undefined;
    socket.once('close', () => {
      if (client === undefined) upstream.terminate();
    });
    upstream.on('message', (data, isBinary) => {
      if (client === undefined) early.push([data, isBinary]);
      else this.toClient(client, data, isBinary, hooks);
    });
    upstream.once('unexpected-response', (_r, res) => {
      res.resume();
      const status = res.statusCode === 401 || res.statusCode === 403 ? res.statusCode : 503;
      refuseUpgrade(socket, status, status === 503 ? 3 : undefined);
      upstream.terminate();
    });
    upstream.on('error', (e) => {
      this.log.debug({ err: e.message }, 'gate: ComfyUI websocket (relayed)');
      if (client === undefined) refuseUpgrade(socket, 503, 3);
      else client.terminate();
    });
    upstream.once('open', () => {
      if (socket.destroyed) return upstream.terminate();
      if (upstream.protocol !== '') this.chosen.set(req, upstream.protocol);
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        client = ws;
        for (const [data, isBinary] of early.splice(0)) this.toClient(ws, data, isBinary, hooks);
        ws.on('message', (data, isBinary) => {
          if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: isBinary });
        });
        ws.on('error', () => upstream.terminate());
        ws.once('close', (code, reason) => {
          hooks.closed(ws);
          closeWith(upstream, code, reason);
        });
        upstream.once('close', (code, reason) => closeWith(ws, code, reason));
        hooks.opened(ws);
      });
    });
  }

  private toClient(ws: WebSocket, data: RawData, isBinary: boolean, hooks: RelayHooks): void {
    if (ws.readyState !== WebSocket.OPEN) return;
    if (ws.bufferedAmount > MAX_BUFFERED) {
      ws.terminate();
      return;
    }
    if (isBinary) return ws.send(data, { binary: true });
    const text = Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]).toString('utf8');
    ws.send(hooks.fromComfy(text), { binary: false });
  }
}

/** Pass a close on with its code when the other side may send it (1005, 1006, 1015 are never sent). */
function closeWith(ws: WebSocket, code: number, reason: Buffer): void {
  if (ws.readyState === WebSocket.CLOSED || ws.readyState === WebSocket.CLOSING) return;
  const sendable = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
  ws.close(sendable ? code : 1000, reason.length <= 123 ? reason : undefined);
}
