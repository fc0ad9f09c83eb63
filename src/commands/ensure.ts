import { loadControlConfig, type ControlConfig } from '../config.js';
import { secondsSetting } from '../config-values.js';
import { controlRequest, daemonJson } from '../daemon/client.js';
import { followJob, jobNow, modelProgress, type Followed } from '../daemon/follow-job.js';
import { ModelsyncError } from '../errors.js';
import type { JobSnapshot, ModelProgress } from '../ondemand/service.js';
import { print, printJson, type CommandIo } from './common.js';
import { ensureDisplay, entryLine } from './ensure-display.js';
import { ensureRequests } from './ensure-entries.js';

/** The answer to POST /models: a job's first states, or a refusal. */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;
/** Refusals that asking again will not fix: the request or the daemon's policy (exit 2). */
const REFUSALS: ReadonlySet<string> = new Set(['E_USAGE', 'E_MANIFEST', 'E_POLICY']);
/** The shell's code for a command stopped by SIGINT. */
const INTERRUPTED = 130;

/**
 * `modelsync ensure ENTRY... [--workflow FILE]`: POST /models to the running daemon and follow
 * the job to its end. Exit 0 when every entry is ready; 1 when one failed, the daemon is not
 * there or failed, or --timeout ran out (the job goes on in the daemon); 2 for bad usage and for
 * what the daemon refuses as a request (E_USAGE, E_MANIFEST) or by its policy (E_POLICY).
 */
export async function ensureCommand(io: CommandIo): Promise<number> {
  const config = loadControlConfig(io.flags, io.env);
  const timeoutMs = io.flags.timeout === undefined ? undefined : secondsSetting('--timeout', io.flags.timeout, 0);
  const requests = await ensureRequests(io.positionals, io.flags.workflow);
  const where = `${config.control.host}:${config.control.port}`;
  if (requests.length === 0) {
    io.stderr.write('modelsync: the workflow names no models: nothing to ensure\n');
    if (config.json) printJson(io, { job: null, ok: true, models: [] });
    return 0;
  }
  const answer = await controlRequest(config, 'POST', '/models', { json: { models: requests }, connectTimeoutMs: 2000, answerTimeoutMs: 120_000, maxBytes: MAX_ANSWER_BYTES });
  if (answer === undefined) throw new ModelsyncError('E_DAEMON', `no daemon answers on ${where} (start modelsync run, or point --control / MODELSYNC_CONTROL at it)`);
  if (answer.status !== 202) return refused(io, config, answer.status, lenientJson(answer.body), answer.url, where);
  const accepted = acceptedJob(daemonJson<unknown>(answer), answer.url);

  const stop = new AbortController();
  let why: 'timeout' | 'interrupted' | undefined;
  const timer = timeoutMs === undefined ? undefined : setTimeout(() => ((why = 'timeout'), stop.abort()), timeoutMs);
  const onSigint = (): void => {
    why = 'interrupted';
    stop.abort();
  };
  process.once('SIGINT', onSigint);
  const display = ensureDisplay(io.stderr, (io.stderr as NodeJS.WriteStream).isTTY === true);
  let followed: Followed;
  try {
    display.update(accepted.models);
    followed = timeoutMs === 0 ? settledNow(await jobNow(config, accepted.id)) : await followJob(config, accepted.id, accepted.models, { onModels: (m) => display.update(m), signal: stop.signal });
  } finally {
    display.done();
    if (timer) clearTimeout(timer);
    process.off('SIGINT', onSigint);
  }

  if (!followed.done) {
    const snapshot: JobSnapshot = { id: accepted.id, done: false, ok: false, models: followed.models };
    if (config.json) printJson(io, snapshot);
    else for (const m of followed.models) print(io, entryLine(m));
    const stopped = why === 'interrupted' ? 'interrupted' : `stopped waiting after ${io.flags.timeout ?? '0'} s (--timeout)`;
    io.stderr.write(`modelsync: ${stopped}: job ${accepted.id} goes on in the daemon on ${where} (GET /models/jobs/${accepted.id})\n`);
    return why === 'interrupted' ? INTERRUPTED : 1;
  }
  const job = followed.job;
  if (config.json) printJson(io, job);
  else {
    for (const m of job.models) print(io, entryLine(m));
    const ready = job.models.filter((m) => m.state === 'ready').length;
    print(io, `${ready}/${job.models.length} ready (job ${job.id})`);
  }
  for (const m of job.models) if (m.state === 'failed') io.stderr.write(`modelsync: ${m.dest}: ${m.error?.code ?? 'E_DAEMON'}: ${m.error?.message ?? 'failed (the daemon gave no reason)'}\n`);
  return job.ok ? 0 : 1;
}

/** `--timeout 0`: the job as it is, done or not. */
function settledNow(job: JobSnapshot): Followed {
  return job.done ? { done: true, job } : { done: false, models: job.models };
}

function lenientJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A 202's job id and entries, checked: anything else is not a modelsync daemon. */
function acceptedJob(body: unknown, url: string): { id: string; models: ModelProgress[] } {
  const b = body as { job?: unknown; models?: unknown } | null;
  const models = Array.isArray(b?.models) ? b.models.map(modelProgress) : undefined;
  if (typeof b?.job !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(b.job) || models === undefined || models.some((m) => m === undefined)) {
    throw new ModelsyncError('E_DAEMON', `${url} answered HTTP 202 but not with a job (is --control pointing at something else?)`);
  }
  return { id: b.job, models: models as ModelProgress[] };
}

/** A POST /models answered with an error: one line with its code, exit 2 for a refusal of the request, else 1. */
function refused(io: CommandIo, config: ControlConfig, status: number, body: unknown, url: string, where: string): number {
  const e = (body as { error?: { code?: unknown; message?: unknown; dest?: unknown } } | null)?.error;
  if (typeof e?.code !== 'string' || typeof e.message !== 'string') {
    if (status >= 500) throw new ModelsyncError('E_DAEMON', `the daemon on ${where} failed the request (HTTP ${status}); its log says why`, { status });
    throw new ModelsyncError('E_DAEMON', `${url} answered HTTP ${status} without a modelsync error (is --control pointing at something else?)`, { status });
  }
  if (config.json) printJson(io, { error: { code: e.code, message: e.message, ...(typeof e.dest === 'string' ? { dest: e.dest } : {}) } });
  io.stderr.write(`modelsync: ${e.code}: ${e.message.slice(0, 2000)}\n`);
  return status >= 400 && status < 500 && REFUSALS.has(e.code) ? 2 : 1;
}
