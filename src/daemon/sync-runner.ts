import { ModelsyncError } from '../errors.js';
import type { SyncReport } from '../sync/types.js';

/** What a sync request gets back (and POST /resync answers). */
export interface SyncOutcome {
  readonly ok: boolean;
  /** Why it ran: startup, manifest change, SIGHUP, resync request... */
  readonly reason: string;
  readonly report?: SyncReport | undefined;
  /** A failure of the sync as a whole (no space, aborted), as opposed to per-entry failures. */
  readonly error?: { readonly code: string; readonly message: string } | undefined;
  /** The manifest on disk is invalid; the last valid one was synced instead. */
  readonly manifestError?: string | undefined;
}

/** `requiredOnly`: the startup phase, before the child may start. */
export type SyncExec = (reason: string, refresh: boolean, requiredOnly: boolean) => Promise<SyncOutcome>;

/**
 * One sync at a time. A request while a sync runs waits for the next one, which starts after it
 * (it may have been asked for because the manifest just changed); every request made meanwhile
 * shares that same next sync.
 */
export class SyncRunner {
  private running: Promise<SyncOutcome> | undefined;
  private queued: { promise: Promise<SyncOutcome>; reasons: string[]; refresh: boolean } | undefined;
  private closed = false;

  constructor(private readonly exec: SyncExec) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** A request that has to wait is merged into the next full sync (which covers `requiredOnly`). */
  request(reason: string, refresh = false, requiredOnly = false): Promise<SyncOutcome> {
    if (this.closed) return Promise.resolve(stopped(reason));
    if (!this.running) return this.launch(reason, refresh, requiredOnly);
    if (this.queued) {
      this.queued.refresh ||= refresh;
      if (!this.queued.reasons.includes(reason)) this.queued.reasons.push(reason);
      return this.queued.promise;
    }
    const q: { promise: Promise<SyncOutcome>; reasons: string[]; refresh: boolean } = { promise: Promise.resolve(stopped(reason)), reasons: [reason], refresh };
    q.promise = this.running.then(() => {
      this.queued = undefined;
      return this.closed ? stopped(q.reasons.join(', ')) : this.launch(q.reasons.join(', '), q.refresh, false);
    });
    this.queued = q;
    return q.promise;
  }

  /** No new syncs; resolves once the one in progress (and any queued) has ended. */
  async close(): Promise<void> {
    this.closed = true;
    await this.running;
    await this.queued?.promise;
  }

  private launch(reason: string, refresh: boolean, requiredOnly: boolean): Promise<SyncOutcome> {
    const p: Promise<SyncOutcome> = this.exec(reason, refresh, requiredOnly)
      .catch((e: unknown): SyncOutcome => {
        const me = e instanceof ModelsyncError ? e : new ModelsyncError('E_SYNC_FAILED', String(e), { cause: e });
        return { ok: false, reason, error: { code: me.code, message: me.message } };
      })
      .finally(() => {
        if (this.running === p) this.running = undefined;
      });
    this.running = p;
    return p;
  }
}

function stopped(reason: string): SyncOutcome {
  return { ok: false, reason, error: { code: 'E_ABORTED', message: 'the daemon is stopping' } };
}
