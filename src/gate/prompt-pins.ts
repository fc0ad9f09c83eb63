import type { Logger } from '../log.js';
import { callComfy } from './comfy-call.js';

/** What pins a prompt's models in the on-demand layer; released once it has run. */
export interface PinHolder {
  release(): void;
}

interface Tracked {
  readonly holder: PinHolder;
  readonly deadline: number;
}

export interface PromptPinsOptions {
  /** ComfyUI's base URL (undefined while it is not known). */
  readonly comfyUrl: () => string | undefined;
  /** A read of ComfyUI's queue at most this often while prompts are tracked. */
  readonly pollMs: number;
  /** A prompt whose end is never seen is let go after this long. */
  readonly maxMs: number;
  readonly log: Logger;
  readonly now?: () => number;
}

/** /queue lists every prompt with its whole workflow: a long queue of big ones is many MB. */
const MAX_QUEUE_BYTES = 64 * 1024 * 1024;

/**
 * The pins of prompts the gate has relayed, each held until its prompt has run. ComfyUI's own
 * queue (GET /queue: running and pending) is what decides: a prompt no longer in it has ended,
 * whether it succeeded, failed, was interrupted or deleted from the queue, or ComfyUI restarted
 * and lost it. Messages on the websocket (`status` on every queue change, `execution_*`) only
 * make the gate look sooner, so a message naming a prompt id it does not own (a client may
 * choose its prompt_id, and so can another client) never releases anything by itself. A prompt
 * that never leaves the queue is let go after `maxMs`, with a warning.
 */
export class PromptPins {
  private readonly tracked = new Map<string, Tracked[]>();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private again = false;
  private closed = false;
  private readonly now: () => number;

  constructor(private readonly o: PromptPinsOptions) {
    this.now = o.now ?? (() => performance.now());
  }

  /** Prompts holding pins now. */
  get size(): number {
    return this.tracked.size;
  }

  /** Hold `holder` until ComfyUI's queue no longer has `promptId`. */
  track(promptId: string, holder: PinHolder): void {
    if (this.closed) {
      holder.release();
      return;
    }
    const list = this.tracked.get(promptId) ?? [];
    list.push({ holder, deadline: this.now() + this.o.maxMs });
    this.tracked.set(promptId, list);
    this.schedule(this.o.pollMs);
  }

  /** Something happened to ComfyUI's queue (a websocket message): look now. */
  nudge(): void {
    if (this.tracked.size > 0) this.schedule(0);
  }

  /** Let every pin go (the gate is closing). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const list of this.tracked.values()) for (const t of list) t.holder.release();
    this.tracked.clear();
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.polling) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.poll(), ms);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    this.polling = true;
    this.again = false;
    try {
      const live = await this.queued();
      this.settle(live);
    } finally {
      this.polling = false;
      if (this.tracked.size > 0) this.schedule(this.again ? 0 : this.o.pollMs);
    }
  }

  /** The prompt ids in ComfyUI's queue, or undefined when it did not say (down, restarting). */
  private async queued(): Promise<Set<string> | undefined> {
    const base = this.o.comfyUrl();
    if (base === undefined) return undefined;
    try {
      const r = await callComfy(`${base}/queue`, { method: 'GET', maxBytes: MAX_QUEUE_BYTES, timeoutMs: 10_000 });
      if (r.status !== 200) return undefined;
      const q = JSON.parse(r.body.toString('utf8')) as { queue_running?: unknown; queue_pending?: unknown };
      const ids = new Set<string>();
      for (const list of [q.queue_running, q.queue_pending]) {
        if (!Array.isArray(list)) return undefined;
        for (const item of list) if (Array.isArray(item) && item[1] !== undefined) ids.add(String(item[1]));
      }
      return ids;
    } catch (e) {
      this.o.log.debug({ err: e instanceof Error ? e.message : String(e) }, 'gate: cannot read ComfyUI\'s queue');
      return undefined;
    }
  }

  private settle(live: Set<string> | undefined): void {
    const now = this.now();
    for (const [id, list] of this.tracked) {
      const done = live !== undefined && !live.has(id);
      const kept = list.filter((t) => {
        if (!done && t.deadline > now) return true;
        if (!done) this.o.log.warn({ promptId: id.slice(0, 100), maxSeconds: this.o.maxMs / 1000 }, 'gate: a prompt is still queued after MODELSYNC_GATE_PIN_MAX; its models are no longer pinned');
        t.holder.release();
        return false;
      });
      if (kept.length === 0) this.tracked.delete(id);
      else this.tracked.set(id, kept);
    }
  }
}
