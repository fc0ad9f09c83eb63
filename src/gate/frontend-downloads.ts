import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { destProblem } from '../manifest/dest.js';
import { redactUrl } from '../redact.js';
import type { GateAuth } from './gate-auth.js';
import type { FrontendHandler } from './gate.js';
import type { FrontendModels, GateModelEvent } from './models-port.js';
import { onDisk } from './on-disk.js';
import { readBody } from './read-body.js';
import { advance, finished, newStatus, withDownloadsFlag, type Download } from './download-status.js';
import { MessageRelay } from './ws-relay.js';

/**
 * EXPERIMENTAL (--gate-frontend-downloads): the server-side model download API that ComfyUI's
 * frontend carries behind its `server_side_model_downloads` feature flag
 * (/work/shared/docs/comfyui-downloads.md; no ComfyUI server implements it), backed by the
 * on-demand service, so the frontend's missing-models dialog downloads into the verified store.
 * The frontend may change this contract: everything about it is in this file and ws-relay.ts.
 *
 * What the service cannot do is said, not faked: pause, resume and cancel answer 501
 * NOT_SUPPORTED (a download runs to its end; an interrupted one resumes where it was).
 */

const MAX_BODY = 64 * 1024;
const MAX_KEPT = 500;
const MODEL_FILE = /\.(safetensors|sft|ckpt|pt|pth)$/i;

export interface FrontendDownloadsOptions {
  readonly models: FrontendModels;
  readonly modelsDir: string;
  readonly log: Logger;
  /** Providers' tokens present in the environment (never the tokens). */
  readonly credentials: { readonly huggingface: boolean; readonly civitai: boolean };
}

export class FrontendDownloads implements FrontendHandler {
  private readonly downloads = new Map<string, Download>();
  private readonly clients = new Set<WebSocket>();
  private readonly relay: MessageRelay;
  private readonly unsubscribe: () => void;

  constructor(private readonly o: FrontendDownloadsOptions) {
    this.relay = new MessageRelay(o.log);
    this.unsubscribe = o.models.subscribe((e) => this.onEvent(e));
  }

  close(): void {
    this.unsubscribe();
    for (const c of this.clients) c.terminate();
  }

  handle(req: IncomingMessage, res: ServerResponse, routePath: string, auth: GateAuth): boolean {
    if (routePath !== '/api/download' && !routePath.startsWith('/api/download/')) return false;
    const v = auth.mayDownload(req, routePath);
    if (!v.ok) {
      req.resume();
      const code = v.status === 401 ? 'CREDENTIALS_REQUIRED' : 'URL_NOT_ALLOWED';
      send(res, v.status, { error: { code, message: auth.required ? 'log in at /modelsync/login (MODELSYNC_CONTROL_TOKEN) to download through this gate' : 'downloads through this gate are for this machine\'s own pages', details: null } });
      return true;
    }
    this.route(req, res, routePath).catch((e: unknown) => {
      this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'gate: frontend download request failed');
      if (!res.headersSent) send(res, 500, { error: { code: 'INTERNAL', message: 'internal error', details: null } });
    });
    return true;
  }

  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, routePath: string, target: string): boolean {
    if (routePath !== '/ws' && routePath !== '/api/ws') return false;
    this.relay.relay(req, socket, head, target, {
      fromComfy: (text) => withDownloadsFlag(text),
      opened: (ws) => this.clients.add(ws),
      closed: (ws) => this.clients.delete(ws),
    });
    return true;
  }

  private async route(req: IncomingMessage, res: ServerResponse, p: string): Promise<void> {
    const m = req.method ?? 'GET';
    if (p === '/api/download' && m === 'GET') return send(res, 200, { downloads: [...this.downloads.values()].map((d) => d.status) });
    if (p === '/api/download/enqueue' && m === 'POST') return this.enqueue(req, res);
    if (p === '/api/download/availability' && m === 'POST') return this.availability(req, res);
    if (p === '/api/download/clear' && m === 'POST') {
      req.resume();
      let deleted = 0;
      for (const [id, d] of this.downloads) if (finished(d.status.status)) deleted += Number(this.downloads.delete(id));
      return send(res, 200, { deleted });
    }
    if (p === '/api/download/auth' && m === 'GET') {
      const c = this.o.credentials;
      return send(res, 200, { providers: [provider('huggingface', c.huggingface), provider('civitai', c.civitai)] });
    }
    if (/^\/api\/download\/auth\/[^/]+\/(login|logout)$/.test(p)) {
      req.resume();
      return send(res, 400, { error: { code: 'OAUTH_NOT_CONFIGURED', message: 'tokens come from the environment (HF_TOKEN, CIVITAI_TOKEN)', details: null } });
    }
    const one = /^\/api\/download\/([0-9a-f]{1,64})(?:\/(pause|resume|cancel|priority))?$/.exec(p);
    const d = one?.[1] === undefined ? undefined : this.downloads.get(one[1]);
    if (one === null) return notFound(req, res);
    if (d === undefined) return notFound(req, res, 'no such download');
    const action = one[2];
    if (action === undefined && m === 'DELETE') {
      req.resume();
      if (!finished(d.status.status)) return send(res, 409, { error: { code: 'DOWNLOAD_ACTIVE', message: 'the download is still running', details: null } });
      this.downloads.delete(d.status.download_id);
      return send(res, 200, { deleted: true });
    }
    if (action === 'priority' && m === 'POST') {
      const body = await readJson(req, res);
      if (body === undefined) return;
      const priority = (body as { priority?: unknown }).priority;
      if (!Number.isInteger(priority)) return invalid(res, 'INVALID_BODY', 'priority must be an integer');
      // Kept and shown; the service fetches in its own order.
      d.status.priority = priority as number;
      this.touch(d);
      return send(res, 200, { ok: true });
    }
    if ((action === 'pause' || action === 'resume' || action === 'cancel') && m === 'POST') {
      req.resume();
      return send(res, 501, { error: { code: 'NOT_SUPPORTED', message: `${action} is not supported: a download runs to its end, and an interrupted one resumes where it was`, details: null } });
    }
    return notFound(req, res);
  }

  private async enqueue(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, res);
    if (body === undefined) return;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return invalid(res, 'INVALID_BODY', 'expected {url, model_id}');
    const b = body as { url?: unknown; model_id?: unknown; priority?: unknown; expected_sha256?: unknown; allow_any_extension?: unknown };
    if (typeof b.url !== 'string' || b.url.length > 4096) return invalid(res, 'INVALID_BODY', 'url must be a string');
    if (typeof b.model_id !== 'string') return invalid(res, 'INVALID_BODY', 'model_id must be "<directory>/<filename>"');
    const sha = b.expected_sha256;
    if (sha !== undefined && sha !== null && (typeof sha !== 'string' || !/^[0-9a-fA-F]{64}$/.test(sha))) return invalid(res, 'INVALID_BODY', 'expected_sha256 must be 64 hex digits or null');
    const modelId = b.model_id;
    const slash = modelId.indexOf('/');
    const problem = destProblem(modelId, []);
    if (slash <= 0 || (problem !== undefined && !problem.startsWith('unknown top folder'))) return invalid(res, 'INVALID_MODEL_ID', `model_id ${problem ?? 'must be "<directory>/<filename>"'}`);
    if (b.allow_any_extension !== true && !MODEL_FILE.test(modelId)) return invalid(res, 'INVALID_MODEL_ID', 'model_id must name a .safetensors, .sft, .ckpt, .pt or .pth file');
    const running = [...this.downloads.values()].find((d) => d.status.model_id === modelId && !finished(d.status.status));
    if (running !== undefined) return send(res, 409, { error: { code: 'ALREADY_DOWNLOADING', message: `${modelId} is being downloaded`, details: { download_id: running.status.download_id } } });
    if (await onDisk(this.o.modelsDir, modelId)) return send(res, 409, { error: { code: 'ALREADY_AVAILABLE', message: `${modelId} is already there`, details: null } });
    const request = { name: modelId.slice(slash + 1), url: b.url, directory: modelId.slice(0, slash), ...(typeof sha === 'string' ? { hash: sha.toLowerCase(), hash_type: 'sha256' } : {}) };
    let job;
    try {
      job = await this.o.models.submit([request]);
    } catch (e) {
      if (!(e instanceof ModelsyncError)) throw e;
      const code = e.code === 'E_POLICY' ? 'URL_NOT_ALLOWED' : e.code === 'E_MANIFEST' ? 'INVALID_MODEL_ID' : e.code === 'E_GATED' ? 'GATED_REPO' : e.code === 'E_AUTH' ? 'CREDENTIALS_REQUIRED' : 'INVALID_BODY';
      return send(res, code === 'URL_NOT_ALLOWED' ? 403 : 400, { error: { code, message: e.message, details: null } });
    }
    const id = randomBytes(8).toString('hex');
    const status = newStatus(id, modelId, redactUrl(b.url), Number.isInteger(b.priority) ? (b.priority as number) : 0);
    const d: Download = { status, job: job.id };
    this.downloads.set(id, d);
    this.prune();
    const first = job.snapshot().models[0];
    if (first !== undefined) this.apply(d, first.state, first);
    void job.settled.then((s) => {
      const m = s.models[0];
      if (m !== undefined) this.apply(d, m.state, m);
    });
    send(res, 202, { download_id: id, accepted: true });
  }

  private async availability(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, res);
    if (body === undefined) return;
    const models = (body as { models?: unknown } | null)?.models;
    if (models === null || typeof models !== 'object' || Array.isArray(models)) return invalid(res, 'INVALID_BODY', 'expected {models: {MODEL_ID: url}}');
    const entries = Object.entries(models as Record<string, unknown>);
    if (entries.length > 256) return invalid(res, 'INVALID_BODY', 'at most 256 models at a time');
    const out: Record<string, unknown> = {};
    for (const [modelId, url] of entries) {
      const slash = modelId.indexOf('/');
      const request = typeof url === 'string' && slash > 0 ? { name: modelId.slice(slash + 1), url, directory: modelId.slice(0, slash) } : undefined;
      const present = await onDisk(this.o.modelsDir, modelId);
      const active = [...this.downloads.values()].find((d) => d.status.model_id === modelId && !finished(d.status.status));
      out[modelId] = {
        url_allowed: request !== undefined && (await this.o.models.allows(request)),
        state: present ? 'available' : 'missing',
        ...(active === undefined ? {} : { download_id: active.status.download_id, progress: active.status.progress, bytes_done: active.status.bytes_done, total_bytes: active.status.total_bytes, speed_bps: active.status.speed_bps }),
      };
    }
    send(res, 200, { models: out });
  }

  private onEvent(e: GateModelEvent): void {
    for (const d of this.downloads.values()) {
      if (d.job === e.job && !finished(d.status.status)) this.apply(d, e.type === 'progress' ? 'downloading' : e.type, e.model);
    }
  }

  private apply(d: Download, state: string, m: GateModelEvent['model']): void {
    if (advance(d.status, state, m)) this.touch(d);
  }

  /** Every client hears of every change, as the frontend expects (it polls only when nothing comes for 8 s). */
  private touch(d: Download): void {
    d.status.updated_at = Date.now() / 1000;
    const msg = JSON.stringify({ type: 'download_progress', data: d.status });
    for (const c of this.clients) if (c.readyState === WebSocket.OPEN) c.send(msg);
  }

  private prune(): void {
    for (const [id, d] of this.downloads) {
      if (this.downloads.size <= MAX_KEPT) return;
      if (finished(d.status.status)) this.downloads.delete(id);
    }
  }
}

function provider(name: string, present: boolean): Record<string, unknown> {
  return { provider: name, env_key_present: present, logged_in: present, login_in_progress: false };
}

/** The JSON body, or undefined once an error has been answered. */
async function readJson(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
  const raw = await readBody(req, MAX_BODY);
  if (raw === 'aborted') return undefined;
  if (raw === 'too-large') {
    res.setHeader('connection', 'close');
    invalid(res, 'INVALID_BODY', `a body of at most ${MAX_BODY} bytes`);
    return undefined;
  }
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch {
    invalid(res, 'INVALID_JSON', 'the body is not JSON');
    return undefined;
  }
}

function invalid(res: ServerResponse, code: string, message: string): void {
  send(res, 400, { error: { code, message, details: null } });
}

function notFound(req: IncomingMessage, res: ServerResponse, message = 'not found'): void {
  req.resume();
  send(res, 404, { error: { code: 'NOT_FOUND', message, details: null } });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}
