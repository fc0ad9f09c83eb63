import type { IncomingMessage, ServerResponse } from 'node:http';
import { ModelsyncError, type ErrorCode } from '../errors.js';
import type { Job, JobSnapshot, OnDemandService } from '../ondemand/service.js';
import { BadRequest, readJsonBody } from './json-body.js';

/** Bodies beyond this are refused unread (a workflow's model list is a few kilobytes). */
export const MAX_BODY_BYTES = 1024 * 1024;
/** The longest ?wait= honoured: a day, for the largest downloads over slow links. */
const MAX_WAIT_S = 86_400;

/** Origin failures: the models' server said no, or sent what did not verify. */
const UPSTREAM: ReadonlySet<string> = new Set([
  'E_AUTH', 'E_GATED', 'E_NOT_FOUND', 'E_OFFLINE', 'E_HTTP', 'E_NETWORK', 'E_TIMEOUT', 'E_REDIRECT', 'E_INSECURE_REDIRECT',
  'E_RATE_LIMITED', 'E_RANGE', 'E_SIZE_MISMATCH', 'E_HASH_MISMATCH', 'E_CORRUPT', 'E_SOURCE_CHANGED', 'E_S3', 'E_TOO_SLOW',
]);

/** The HTTP status an error code answers with (docs/daemon.md lists them). */
export function statusFor(code: string): number {
  if (code === 'E_USAGE' || code === 'E_MANIFEST') return 400;
  if (code === 'E_POLICY') return 403;
  if (code === 'E_ABORTED') return 503;
  if (code === 'E_NO_SPACE' || code === 'E_DISK_FULL') return 507;
  if (UPSTREAM.has(code)) return 502;
  return 500;
}

/**
 * POST /models `{"models": [ENTRY, ...]}`: 202 with the job and each entry's state; with
 * `?wait=SECONDS`, the answer once the job is done (200, or the first failure's status with
 * `{"error": {code, message, dest}}`), or 202 as before if it is not done by then. `?wait=0` is
 * readiness at once: 200 when everything is in place, else 202 (the job runs on). A refused
 * request starts nothing.
 */
export async function postModels(req: IncomingMessage, res: ServerResponse, service: OnDemandService): Promise<void> {
  let wait: number | undefined;
  let requests: unknown[];
  try {
    wait = waitParam(req.url ?? '/');
    requests = modelsOf(await readJsonBody(req, MAX_BODY_BYTES));
  } catch (e) {
    if (!(e instanceof BadRequest)) throw e;
    if (e.httpStatus === 413) {
      // The rest of the body is never read: this connection cannot carry another request.
      res.setHeader('connection', 'close');
      res.once('finish', () => req.destroy());
    }
    return sendError(res, e.httpStatus, e.code, e.message, undefined);
  }
  let job;
  try {
    job = await service.submit(requests);
  } catch (e) {
    if (!(e instanceof ModelsyncError)) throw e;
    return sendError(res, statusFor(e.code), e.code, e.message, e.dest);
  }
  if (wait === undefined) return accepted(res, job.snapshot());
  const snap = await settledWithin(job, wait, res);
  if (!snap.done) return accepted(res, snap);
  const failed = snap.models.find((m) => m.state === 'failed');
  if (failed?.error) return sendError(res, statusFor(failed.error.code), failed.error.code, failed.error.message, failed.dest, snap);
  return sendJson(res, 200, snap);
}

/** GET /models/jobs/ID: the job's entries with state, bytes, total and speed. */
export function getJob(res: ServerResponse, id: string, service: OnDemandService): void {
  const job = /^[A-Za-z0-9_-]{1,64}$/.test(id) ? service.job(id) : undefined;
  if (!job) return sendError(res, 404, 'E_NOT_FOUND', 'no such job (finished jobs are kept for a while, not forever)', undefined);
  sendJson(res, 200, job.snapshot());
}

function waitParam(url: string): number | undefined {
  const q = new URLSearchParams(url.includes('?') ? url.slice(url.indexOf('?') + 1) : '');
  for (const k of q.keys()) if (k !== 'wait') throw new BadRequest(400, `unknown query parameter ${JSON.stringify(k.slice(0, 40))} (only ?wait=SECONDS)`);
  const all = q.getAll('wait');
  if (all.length === 0) return undefined;
  const raw = all[0] ?? '';
  const n = Number(raw);
  if (all.length > 1 || raw.trim() === '' || !Number.isFinite(n) || n < 0 || n > MAX_WAIT_S) throw new BadRequest(400, `?wait= must be one number of seconds from 0 to ${MAX_WAIT_S}`);
  return n;
}

function modelsOf(body: unknown): unknown[] {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new BadRequest(400, 'the body must be {"models": [ENTRY, ...]}');
  const keys = Object.keys(body);
  const extra = keys.find((k) => k !== 'models');
  if (extra !== undefined) throw new BadRequest(400, `unknown field ${JSON.stringify(extra.slice(0, 40))} (the body is {"models": [ENTRY, ...]})`);
  const models = (body as { models?: unknown }).models;
  if (!Array.isArray(models)) throw new BadRequest(400, '"models" must be a list of entries');
  return models;
}

/** The job's snapshot once settled, or as it is after `seconds` (or when the caller hung up). */
function settledWithin(job: Job, seconds: number, res: ServerResponse): Promise<JobSnapshot> {
  const now = job.snapshot();
  if (now.done || seconds === 0) return Promise.resolve(now);
  return new Promise((resolve) => {
    let over = false;
    const finish = (s: JobSnapshot): void => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      res.off('close', onClose);
      resolve(s);
    };
    const timer = setTimeout(() => finish(job.snapshot()), seconds * 1000);
    const onClose = (): void => finish(job.snapshot());
    res.once('close', onClose);
    void job.settled.then(finish);
  });
}

function accepted(res: ServerResponse, s: JobSnapshot): void {
  sendJson(res, 202, { job: s.id, models: s.models });
}

function sendError(res: ServerResponse, status: number, code: ErrorCode | string, message: string, dest: string | undefined, job?: JobSnapshot): void {
  sendJson(res, status, { error: { code, message, ...(dest === undefined ? {} : { dest }) }, ...(job ? { job: job.id, models: job.models } : {}) });
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  if (res.destroyed || res.headersSent) return;
  const body = `${JSON.stringify(value, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}
