import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { isLoopbackHost } from '../daemon/request-guard.js';
import type { Logger } from '../log.js';

export interface ComfyWatchOptions {
  /** ComfyUI's base URL while it is running; undefined otherwise. */
  readonly comfyUrl: () => string | undefined;
  /** A message that means ComfyUI's queue may have changed. */
  readonly onQueueEvent: () => void;
  readonly log: Logger;
  readonly retryMs?: number;
}

/** Broadcast on every queue change, and at the end of a prompt without a client_id. */
const QUEUE_EVENTS = new Set(['status', 'execution_success', 'execution_error', 'execution_interrupted']);

/**
 * The gate's own websocket to ComfyUI, kept open while ComfyUI runs (reconnected after a
 * restart): ComfyUI broadcasts `status` to every client whenever its queue changes, which is when
 * a prompt's pins may be released. What the messages say is not trusted, only that something
 * changed (prompt-pins.ts reads the queue itself).
 */
export class ComfyWatch {
  private ws: WebSocket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly clientId = `modelsync-gate-${randomBytes(6).toString('hex')}`;

  constructor(private readonly o: ComfyWatchOptions) {
    this.connectSoon(0);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.terminate();
  }

  private connectSoon(ms: number): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), ms);
    this.timer.unref();
  }

  private connect(): void {
    const base = this.o.comfyUrl();
    if (base === undefined) return this.connectSoon(this.o.retryMs ?? 1000);
    const url = `${base.replace(/^http/, 'ws')}/ws?clientId=${this.clientId}`;
    const ws = new WebSocket(url, { handshakeTimeout: 10_000, maxPayload: 16 * 1024 * 1024, rejectUnauthorized: !isLoopbackHost(new URL(base).hostname) });
    this.ws = ws;
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      try {
        const type = (JSON.parse(data.toString()) as { type?: unknown }).type;
        if (typeof type === 'string' && QUEUE_EVENTS.has(type)) this.o.onQueueEvent();
      } catch {
        // Not ours to judge: ComfyUI or a custom node sent something else.
      }
    });
    ws.on('error', (e) => this.o.log.debug({ err: e.message }, 'gate: ComfyUI websocket'));
    ws.on('close', () => {
      if (this.ws === ws) this.ws = undefined;
      // A restart lost ComfyUI's queue: let the pins look at the new one.
      this.o.onQueueEvent();
      this.connectSoon(this.o.retryMs ?? 1000);
    });
  }
}
