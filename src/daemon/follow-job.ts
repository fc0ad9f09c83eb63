import type { ControlConfig } from '../config.js';
import { ModelsyncError } from '../errors.js';
import type { JobSnapshot, ModelProgress, ModelState } from '../ondemand/service.js';
import { controlRequest, daemonJson } from './client.js';
import { readEvents } from './event-reader.js';

/** A job's answer is one line per entry: at most 256 of them. */
const MAX_JOB_BYTES = 4 * 1024 * 1024;
/** How often the job is asked for while no event stream tells when to look. */
const POLL_MS = 1000;
/** While the stream is open: a look now and then all the same, in case it missed something. */
const SAFETY_POLL_MS = 10_000;

const STATES: ReadonlySet<string> = new Set<ModelState>(['queued', 'downloading', 'verifying', 'ready', 'failed', 'evicted']);
const SETTLED: ReadonlySet<string> = new Set<ModelState>(['ready', 'failed', 'evicted']);

export interface FollowOptions {
  /** Every change seen, from the stream or the job endpoint: the entries as they are now. */
  onModels(models: readonly ModelProgress[]): void;
  /** Aborted when the caller stops waiting (--timeout, SIGINT); the job goes on in the daemon. */
  readonly signal: AbortSignal;
}

export type Followed = { readonly done: true; readonly job: JobSnapshot } | { readonly done: false; readonly models: readonly ModelProgress[] };

/**
 * Follow an on-demand job to its end. The outcome always comes from GET /models/jobs/ID; the
 * event stream (GET /events?job=ID) only says when to ask and carries progress in between. The
 * job is asked for once the stream is open (what happened between the POST and the stream is
 * not lost), on each settled entry, and every SAFETY_POLL_MS; without a stream (refused,
 * dropped, garbled, oversized) every POLL_MS. A daemon that stops answering, or answers what
 * is not a job, is an E_DAEMON error.
 */
export async function followJob(config: Pick<ControlConfig, 'control'>, id: string, initial: readonly ModelProgress[], opts: FollowOptions): Promise<Followed> {
  let models = [...initial];
  let live = false;
  // Set by every reason to look; a reason that comes while the job is being asked for is kept,
  // so the next look is at once rather than a poll interval later.
  let woken: boolean;
  let wake: (() => void) | undefined;
  const wakeUp = (): void => {
    woken = true;
    wake?.();
  };
  const stream = new AbortController();
  const stopStream = (): void => stream.abort();
  opts.signal.addEventListener('abort', stopStream, { once: true });
  void readEvents(
    config,
    `/events?job=${encodeURIComponent(id)}`,
    {
      onOpen() {
        live = true;
        wakeUp();
      },
      onEvent(e) {
        const m = eventModel(e.data);
        if (m === undefined) return;
        models = models.map((old) => (old.dest === m.dest && !SETTLED.has(old.state) ? m : old));
        opts.onModels(models);
        if (SETTLED.has(m.state)) wakeUp();
      },
    },
    stream.signal,
  ).then(() => {
    live = false;
    wakeUp();
  });
  try {
    while (!opts.signal.aborted) {
      woken = false;
      const job = await askJob(config, id, opts.signal);
      if (job === undefined) break;
      models = [...job.models];
      opts.onModels(models);
      if (job.done) return { done: true, job };
      if (woken) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, live ? SAFETY_POLL_MS : POLL_MS);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
        opts.signal.addEventListener('abort', wake, { once: true });
      });
      if (wake) opts.signal.removeEventListener('abort', wake);
      wake = undefined;
    }
    return { done: false, models };
  } finally {
    opts.signal.removeEventListener('abort', stopStream);
    stream.abort();
  }
}

/** The job as it is now (`--timeout 0`): one GET /models/jobs/ID, no stream. */
export async function jobNow(config: Pick<ControlConfig, 'control'>, id: string): Promise<JobSnapshot> {
  const job = await askJob(config, id, new AbortController().signal);
  if (job === undefined) throw new ModelsyncError('E_DAEMON', `job ${id}: no answer`);
  return job;
}

/** GET /models/jobs/ID, checked to be a job; undefined when the caller stopped waiting meanwhile. */
async function askJob(config: Pick<ControlConfig, 'control'>, id: string, signal: AbortSignal): Promise<JobSnapshot | undefined> {
  let answer;
  try {
    answer = await controlRequest(config, 'GET', `/models/jobs/${encodeURIComponent(id)}`, { connectTimeoutMs: 5000, answerTimeoutMs: 30_000, maxBytes: MAX_JOB_BYTES, signal });
  } catch (e) {
    if (signal.aborted) return undefined;
    throw e;
  }
  if (signal.aborted) return undefined;
  const where = `${config.control.host}:${config.control.port}`;
  if (answer === undefined) throw new ModelsyncError('E_DAEMON', `the daemon on ${where} stopped answering while job ${id} ran`);
  if (answer.status === 404) throw new ModelsyncError('E_DAEMON', `the daemon on ${where} no longer knows job ${id} (did it restart?)`, { status: 404 });
  if (answer.status !== 200) throw new ModelsyncError('E_DAEMON', `the daemon on ${where} answered HTTP ${answer.status} for job ${id}`, { status: answer.status });
  const job = jobSnapshot(daemonJson<unknown>(answer));
  if (job === undefined || job.id !== id) throw new ModelsyncError('E_DAEMON', `${answer.url} answered HTTP 200 but not with a job (is --control pointing at something else?)`);
  return job;
}

/** A job as the daemon sends it, or undefined for anything else. */
export function jobSnapshot(v: unknown): JobSnapshot | undefined {
  if (!isObject(v) || typeof v.id !== 'string' || typeof v.done !== 'boolean' || typeof v.ok !== 'boolean' || !Array.isArray(v.models)) return undefined;
  const models: ModelProgress[] = [];
  for (const m of v.models) {
    const p = modelProgress(m);
    if (p === undefined) return undefined;
    models.push(p);
  }
  return { id: v.id, done: v.done, ok: v.ok, models };
}

/** An entry of a job or an event: dest and state at least; numbers where the daemon gives none are 0. */
export function modelProgress(v: unknown): ModelProgress | undefined {
  if (!isObject(v) || typeof v.dest !== 'string' || typeof v.state !== 'string' || !STATES.has(v.state)) return undefined;
  const num = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : 0);
  const err = isObject(v.error) && typeof v.error.code === 'string' && typeof v.error.message === 'string' ? { code: v.error.code as ModelsyncError['code'], message: v.error.message } : undefined;
  return {
    dest: v.dest,
    source: typeof v.source === 'string' ? v.source : '',
    state: v.state as ModelState,
    bytes: num(v.bytes),
    total: typeof v.total === 'number' && Number.isFinite(v.total) && v.total >= 0 ? v.total : undefined,
    speed: num(v.speed),
    ...(err ? { error: err } : {}),
    ...(v.unmanaged === true ? { unmanaged: true as const } : {}),
  };
}

function eventModel(data: string): ModelProgress | undefined {
  try {
    return modelProgress(JSON.parse(data));
  } catch {
    return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
