import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ModelEvent, OnDemandService } from '../ondemand/service.js';

export interface EventStreamOptions {
  /** A comment line this often keeps proxies and clients from timing the stream out. */
  readonly heartbeatMs: number;
  /** A client that lets this much pile up unread is cut off (it may reconnect). */
  readonly maxBufferedBytes: number;
}

export const EVENT_STREAM_DEFAULTS: EventStreamOptions = { heartbeatMs: 15_000, maxBufferedBytes: 1024 * 1024 };

/** The open streams of one server, ended together on shutdown. */
export class EventStreams {
  private readonly open = new Set<ServerResponse>();

  constructor(private readonly opts: EventStreamOptions = EVENT_STREAM_DEFAULTS) {}

  get size(): number {
    return this.open.size;
  }

  /**
   * GET /events: Server-Sent Events of every on-demand entry's state changes and progress
   * (`event: queued|downloading|verifying|ready|failed|evicted|progress`, `data:` the entry as
   * GET /models/jobs/ID shows it, plus its job). `?job=ID` keeps one job's events. No replay:
   * a client that reconnects asks GET /models/jobs/ID for where things stand.
   */
  serve(req: IncomingMessage, res: ServerResponse, service: OnDemandService): void {
    const q = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    const only = q.get('job') ?? undefined;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(': modelsync on-demand events\nretry: 3000\n\n');
    this.open.add(res);
    let seq = 0;
    const write = (text: string, droppable: boolean): void => {
      if (res.destroyed || res.writableEnded) return;
      // A slow reader: what it has not taken stays in our memory. While it lags, progress (which
      // the next one supersedes) is skipped; past the bound it is let go (it may reconnect).
      if (res.writableLength > this.opts.maxBufferedBytes) {
        res.destroy();
        return;
      }
      if (droppable && res.writableNeedDrain) return;
      res.write(text);
    };
    const unsubscribe = service.subscribe((e: ModelEvent) => {
      if (only !== undefined && e.job !== only) return;
      write(`id: ${++seq}\nevent: ${e.type}\ndata: ${JSON.stringify({ job: e.job, ...e.model })}\n\n`, e.type === 'progress');
    });
    const beat = setInterval(() => write(': heartbeat\n\n', true), this.opts.heartbeatMs);
    beat.unref();
    const done = (): void => {
      clearInterval(beat);
      unsubscribe();
      this.open.delete(res);
    };
    res.once('close', done);
    req.resume();
  }

  /** Shutdown: every stream ends (clients see the end of the stream, not a reset). */
  closeAll(): void {
    for (const res of this.open) res.end();
  }
}
