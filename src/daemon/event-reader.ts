import { request } from 'node:http';
import type { ControlConfig } from '../config.js';
import { controlBaseUrl, controlHeaders } from './client.js';

/** One entry's event is a few hundred bytes; a longer one is not from a modelsync daemon. */
export const MAX_EVENT_BYTES = 256 * 1024;

export interface ServerEvent {
  readonly type: string;
  readonly data: string;
}

/** Why the stream is over: the caller falls back to asking the job endpoint either way. */
export type StreamEnd = 'ended' | 'refused' | 'broken' | 'oversized' | 'aborted';

/**
 * Server-Sent Events from the daemon (GET /events?job=ID), each handed to `onEvent` as it
 * completes. Never rejects and holds at most one event in memory: whatever listens on the
 * control address may send an endless line or never end; the stream is only a hint of when to
 * look, never the outcome itself. `onOpen` runs once the daemon has answered 200.
 */
export function readEvents(config: Pick<ControlConfig, 'control'>, path: string, handlers: { onOpen(): void; onEvent(e: ServerEvent): void }, signal: AbortSignal): Promise<StreamEnd> {
  const url = controlBaseUrl(config) + path;
  return new Promise((resolve) => {
    let over = false;
    const end = (why: StreamEnd): void => {
      if (over) return;
      over = true;
      req.destroy();
      resolve(why);
    };
    const req = request(url, { method: 'GET', agent: false, headers: controlHeaders(config, 'text/event-stream'), signal }, (res) => {
      if (res.statusCode !== 200 || !/^text\/event-stream/i.test(res.headers['content-type'] ?? '')) {
        res.resume();
        end('refused');
        return;
      }
      handlers.onOpen();
      const parser = new EventParser();
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        if (over) return;
        if (!parser.push(text, (e) => handlers.onEvent(e))) end('oversized');
      });
      res.once('end', () => end('ended'));
      res.once('error', () => end(signal.aborted ? 'aborted' : 'broken'));
    });
    req.once('error', () => end(signal.aborted ? 'aborted' : 'broken'));
    req.end();
  });
}

/** The event-stream format (the parts modelsync sends): `event:` and `data:` lines, a blank line ends an event. */
class EventParser {
  private partial = '';
  private type = 'message';
  private data: string[] = [];
  private held = 0;

  /** False once a line or an event outgrows MAX_EVENT_BYTES. */
  push(text: string, emit: (e: ServerEvent) => void): boolean {
    let at = 0;
    for (;;) {
      const nl = text.indexOf('\n', at);
      if (nl < 0) break;
      const line = this.partial + text.slice(at, nl);
      this.partial = '';
      at = nl + 1;
      if (!this.line(line.endsWith('\r') ? line.slice(0, -1) : line, emit)) return false;
    }
    this.partial += text.slice(at);
    return this.partial.length + this.held <= MAX_EVENT_BYTES;
  }

  private line(line: string, emit: (e: ServerEvent) => void): boolean {
    if (line === '') {
      if (this.data.length > 0) emit({ type: this.type, data: this.data.join('\n') });
      this.type = 'message';
      this.data = [];
      this.held = 0;
      return true;
    }
    if (line.startsWith(':')) return true;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') this.type = value;
    else if (field === 'data') {
      this.data.push(value);
      this.held += value.length;
    }
    return this.held <= MAX_EVENT_BYTES;
  }
}
