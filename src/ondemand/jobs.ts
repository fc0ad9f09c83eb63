import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { ErrorCode } from '../errors.js';
import type { Job, JobSnapshot, ModelEvent, ModelProgress, ModelState } from './service.js';

/** Speed is bytes over this window. */
const SPEED_WINDOW_MS = 5_000;
/** At most one 'progress' event per entry this often; state changes are always sent. */
const PROGRESS_EVERY_MS = 500;
/** Finished jobs remembered for GET /models/jobs/ID; older ones are forgotten first. */
const FINISHED_KEPT = 256;

/** One entry of a job, as it goes. */
export class TrackedModel {
  state: ModelState = 'queued';
  bytes = 0;
  total: number | undefined;
  error: { code: ErrorCode; message: string } | undefined;
  unmanaged = false;
  private readonly samples: { at: number; n: number }[] = [];
  private lastProgress = Number.NEGATIVE_INFINITY;

  constructor(
    readonly dest: string,
    readonly source: string,
    private readonly clock: Clock,
  ) {}

  get done(): boolean {
    return this.state === 'ready' || this.state === 'failed' || this.state === 'evicted';
  }

  /** Bytes received; true when a progress event is due. */
  received(n: number): boolean {
    const now = this.clock.now();
    this.bytes += n;
    this.samples.push({ at: now, n });
    while ((this.samples[0]?.at ?? now) < now - SPEED_WINDOW_MS) this.samples.shift();
    if (now - this.lastProgress < PROGRESS_EVERY_MS) return false;
    this.lastProgress = now;
    return true;
  }

  speed(): number {
    if (this.state !== 'downloading') return 0;
    const now = this.clock.now();
    const recent = this.samples.filter((s) => s.at >= now - SPEED_WINDOW_MS);
    return Math.round(recent.reduce((a, s) => a + s.n, 0) / (SPEED_WINDOW_MS / 1000));
  }

  view(): ModelProgress {
    return {
      dest: this.dest,
      source: this.source,
      state: this.state,
      bytes: this.state === 'ready' && this.total !== undefined ? this.total : this.bytes,
      total: this.total,
      speed: this.speed(),
      ...(this.error ? { error: this.error } : {}),
      ...(this.unmanaged ? { unmanaged: true as const } : {}),
    };
  }
}

export class JobRecord implements Job {
  readonly settled: Promise<JobSnapshot>;
  private resolveSettled: (s: JobSnapshot) => void = () => undefined;

  constructor(
    readonly id: string,
    readonly models: readonly TrackedModel[],
    private readonly emit: (e: ModelEvent) => void,
  ) {
    this.settled = new Promise((resolve) => (this.resolveSettled = resolve));
  }

  get done(): boolean {
    return this.models.every((m) => m.done);
  }

  snapshot(): JobSnapshot {
    const done = this.done;
    return { id: this.id, done, ok: done && this.models.every((m) => m.state === 'ready'), models: this.models.map((m) => m.view()) };
  }

  /** A state change of one entry: its event, and the job settles when it was the last one. */
  set(m: TrackedModel, state: ModelState, detail: { error?: { code: ErrorCode; message: string }; total?: number | undefined } = {}): void {
    if (m.done && state !== 'evicted') return;
    if (detail.total !== undefined) m.total = detail.total;
    if (detail.error) m.error = detail.error;
    if (m.state === state) return;
    m.state = state;
    this.emit({ type: state, job: this.id, model: m.view() });
    if (this.done) this.resolveSettled(this.snapshot());
  }

  progress(m: TrackedModel, n: number): void {
    if (m.received(n)) this.emit({ type: 'progress', job: this.id, model: m.view() });
  }

  /** The entry's state as it is, as an event (a job's entries start out queued). */
  announce(m: TrackedModel): void {
    this.emit({ type: m.state, job: this.id, model: m.view() });
  }

  /** Entries that are done before the job starts (ready or refused at once). */
  settleIfDone(): void {
    if (this.done) this.resolveSettled(this.snapshot());
  }
}

/** Jobs by id: every running one, and the last finished ones. */
export class JobBook {
  private readonly jobs = new Map<string, JobRecord>();

  constructor(
    private readonly clock: Clock,
    private readonly emit: (e: ModelEvent) => void,
  ) {}

  create(models: readonly { dest: string; source: string }[]): JobRecord {
    // Unguessable: a job id is all GET /models/jobs/ID asks for.
    const id = randomBytes(9).toString('base64url');
    const job = new JobRecord(
      id,
      models.map((m) => new TrackedModel(m.dest, m.source, this.clock)),
      this.emit,
    );
    this.jobs.set(id, job);
    void job.settled.then(() => this.forgetOld());
    return job;
  }

  get(id: string): JobRecord | undefined {
    return this.jobs.get(id);
  }

  get running(): number {
    let n = 0;
    for (const j of this.jobs.values()) if (!j.done) n++;
    return n;
  }

  private forgetOld(): void {
    const finished = [...this.jobs.values()].filter((j) => j.done);
    for (const j of finished.slice(0, Math.max(0, finished.length - FINISHED_KEPT))) this.jobs.delete(j.id);
  }
}
