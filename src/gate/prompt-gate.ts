import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { redactUrl } from '../redact.js';
import { callComfy } from './comfy-call.js';
import { comfyError, modelFailures, type ComfyErrorBody, type ModelFailure } from './comfy-errors.js';
import type { GateAuth } from './gate-auth.js';
import type { PromptHandler } from './gate.js';
import { applySpans, scanJson, type StringEdit } from './json-splice.js';
import type { GateHolder, GateModels } from './models-port.js';
import { readPrompt, type DeclaredModel, type NodeInput, type UrlInput } from './prompt-models.js';
import { onDisk } from './on-disk.js';
import { readBody } from './read-body.js';
import type { PromptPins } from './prompt-pins.js';
import { stripHopByHop } from './relay.js';
import { queryOf } from './route-path.js';

export interface PromptGateOptions {
  readonly models: GateModels;
  readonly pins: PromptPins;
  readonly modelsDir: string;
  readonly maxPromptBytes: number;
  readonly maxModels: number;
  readonly log: Logger;
  readonly counters: { promptsRelayed: number; promptsRefused: number };
}

/** One request to the service, and the inputs whose value it answers. */
interface Wanted {
  readonly request: unknown;
  readonly at: NodeInput[];
  /** The input's value as the prompt had it (a URL, or a declared model's name). */
  readonly value: string;
  /** Loader inputs to rewrite to the published file name: the folder they look in. */
  readonly rewrite: { readonly folder: string; readonly inputs: NodeInput[] } | undefined;
}

/** ComfyUI answers a prompt with its id and any warnings: a small JSON document. */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/**
 * POST /prompt and /api/prompt through the gate: the prompt's models are had first (prompt-models.ts
 * says which), pinned for as long as the prompt runs, URL inputs rewritten to the local file
 * name, and only then is the prompt relayed. A model that cannot be had answers 400 in
 * ComfyUI's error shape, under the node that asked for it, and nothing reaches ComfyUI.
 */
export class PromptGate implements PromptHandler {
  constructor(private readonly o: PromptGateOptions) {}

  handle(req: IncomingMessage, res: ServerResponse, routePath: string, target: string, auth: GateAuth): void {
    this.run(req, res, routePath, target, auth).catch((e: unknown) => {
      this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'gate: a prompt could not be handled');
      if (!res.headersSent) answer(res, 500, comfyError('gate_error', 'The gate could not handle this prompt', e instanceof Error ? e.message : ''));
      else res.destroy();
    });
  }

  private async run(req: IncomingMessage, res: ServerResponse, routePath: string, target: string, auth: GateAuth): Promise<void> {
    const raw = await readBody(req, this.o.maxPromptBytes);
    if (raw === 'too-large') {
      this.o.counters.promptsRefused++;
      res.setHeader('connection', 'close');
      return answer(res, 413, comfyError('prompt_too_large', `The prompt is larger than ${this.o.maxPromptBytes} bytes (MODELSYNC_GATE_MAX_PROMPT_BYTES)`));
    }
    if (raw === 'aborted') return;
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      this.o.counters.promptsRefused++;
      return answer(res, 400, comfyError('invalid_prompt', 'The prompt is not valid UTF-8'));
    }
    const read = readPrompt(text, this.o.maxModels);
    if (read.kind === 'invalid') {
      this.o.counters.promptsRefused++;
      return answer(res, 400, comfyError(read.type, read.message));
    }
    if (read.kind === 'relay') {
      await this.relay(req, res, routePath, target, auth, raw, undefined);
      return;
    }

    const problems = read.urlInputs.filter((u) => u.problem !== undefined);
    if (problems.length > 0) {
      this.o.counters.promptsRefused++;
      return answer(res, 400, modelFailures(problems.map((u) => ({ at: [u], value: redactUrl(u.url), dest: undefined, code: 'E_USAGE', message: `the URL ${u.problem ?? ''}` }))));
    }
    const { fetch, present } = await this.wanted(read.urlInputs, read.declared);
    if (fetch.length > 0) {
      const v = auth.mayDownload(req, routePath);
      if (!v.ok) {
        this.o.counters.promptsRefused++;
        this.o.log.warn({ status: v.status, reason: v.reason, models: fetch.length }, 'gate: a prompt that needs downloads was refused');
        const failures = fetch.map((w) => failure(w, undefined, 'E_AUTH', auth.required ? 'downloads through the gate need MODELSYNC_CONTROL_TOKEN (Authorization: Bearer TOKEN, or log in at /modelsync/login)' : 'downloads through the gate are for this machine\'s own callers'));
        if (v.status === 401) res.setHeader('www-authenticate', 'Bearer realm="modelsync"');
        const body = modelFailures(failures);
        return answer(res, v.status, { ...body, error: { ...body.error, type: 'downloads_not_authorized', message: 'Models the prompt needs would have to be downloaded, and this request may not' } });
      }
    }

    const holder = this.o.models.holder(`prompt from ${req.socket.remoteAddress ?? 'unknown'}`);
    let relayed = false;
    try {
      const outcome = await this.ensure(fetch, present, holder, res);
      if (outcome === 'gone') return;
      if (outcome.failures.length > 0) {
        this.o.counters.promptsRefused++;
        return answer(res, 400, modelFailures(outcome.failures));
      }
      const edits: StringEdit[] = [];
      for (const [w, dest] of outcome.dests) {
        if (w.rewrite === undefined) continue;
        const name = dest.slice(w.rewrite.folder.length + 1);
        for (const at of w.rewrite.inputs) edits.push({ path: ['prompt', at.nodeId, 'inputs', at.input], value: name });
      }
      const body = edits.length === 0 ? raw : Buffer.from(applySpans(text, scanJson(text, edits).spans), 'utf8');
      relayed = await this.relay(req, res, routePath, target, auth, body, holder);
    } finally {
      if (!relayed) holder.release();
    }
  }

  /** Which requests to make: every URL input (once per URL and folder), every declared model not on disk. */
  private async wanted(urlInputs: readonly UrlInput[], declared: readonly DeclaredModel[]): Promise<{ fetch: Wanted[]; present: Wanted[] }> {
    const byKey = new Map<string, Wanted>();
    for (const u of urlInputs) {
      const key = `${u.folder}\n${u.url}`;
      const w = byKey.get(key) ?? { request: u.request, at: [], value: redactUrl(u.url), rewrite: { folder: u.folder, inputs: [] } };
      w.at.push(u);
      w.rewrite?.inputs.push(u);
      byKey.set(key, w);
    }
    const fetch = [...byKey.values()];
    const present: Wanted[] = [];
    for (const d of declared) {
      const m = d.model;
      const w: Wanted = { request: { name: m.name, url: m.url, directory: m.directory, ...(m.hash === undefined ? {} : { hash: m.hash }), ...(m.hashType === undefined ? {} : { hash_type: m.hashType }) }, at: [...d.users], value: m.name, rewrite: undefined };
      if (await onDisk(this.o.modelsDir, `${m.directory}/${m.name}`)) present.push(w);
      else fetch.push(w);
    }
    return { fetch, present };
  }

  /**
   * Submit what must be fetched as one job and wait for it; what is on disk already is handed
   * over one by one, only to be pinned (and counted as used): it is ComfyUI's to load whatever
   * the service thinks of it, so a refusal there fails nothing.
   */
  private async ensure(fetch: readonly Wanted[], present: readonly Wanted[], holder: GateHolder, res: ServerResponse): Promise<{ failures: ModelFailure[]; dests: [Wanted, string][] } | 'gone'> {
    await Promise.all(present.map((w) => this.o.models.submit([w.request], { holder }).catch((e: unknown) => this.o.log.debug({ model: w.value, err: String(e) }, 'gate: a model on disk was not taken into the on-demand layer'))));
    if (fetch.length === 0) return { failures: [], dests: [] };
    let job;
    try {
      job = await this.o.models.submit(fetch.map((w) => w.request), { holder });
    } catch (e) {
      if (!(e instanceof ModelsyncError)) throw e;
      const w = e.entry === undefined ? undefined : fetch[e.entry];
      return { failures: (w === undefined ? fetch : [w]).map((x) => failure(x, e.dest, e.code, e.message)), dests: [] };
    }
    // A client that gives up waiting does not stop the downloads; it only gets no answer.
    const gone = new Promise<'gone'>((resolve) => res.once('close', () => resolve('gone')));
    const settled = await Promise.race([job.settled, gone]);
    if (settled === 'gone') return 'gone';
    const failures: ModelFailure[] = [];
    const dests: [Wanted, string][] = [];
    fetch.forEach((w, i) => {
      const m = settled.models[i];
      if (m === undefined) failures.push(failure(w, undefined, 'E_SYNC_FAILED', 'no outcome from the on-demand service'));
      else if (m.state !== 'ready') failures.push(failure(w, m.dest, m.error?.code ?? 'E_SYNC_FAILED', m.error?.message ?? `ended ${m.state}`));
      else if (w.rewrite !== undefined && !m.dest.startsWith(`${w.rewrite.folder}/`)) failures.push(failure(w, m.dest, 'E_USAGE', `it was published under ${m.dest}, not in ${w.rewrite.folder}/ where this input looks`));
      else dests.push([w, m.dest]);
    });
    return { failures, dests };
  }

  /** Send the prompt to ComfyUI, hand its answer back, and pin the models until the prompt has run. */
  private async relay(req: IncomingMessage, res: ServerResponse, routePath: string, target: string, auth: GateAuth, body: Buffer, holder: GateHolder | undefined): Promise<boolean> {
    auth.stripCredentials(req);
    const headers: OutgoingHttpHeaders = { ...req.headers };
    stripHopByHop(headers as IncomingMessage['headers'], { keepUpgrade: false });
    delete headers['transfer-encoding'];
    delete headers.expect;
    headers['content-length'] = body.length;
    const answerOf = await callComfy(`${target}${routePath}${queryOf(req.url)}`, { method: 'POST', headers, body, maxBytes: MAX_ANSWER_BYTES }).catch(() => undefined);
    if (answerOf === undefined) {
      answer(res, 503, comfyError('comfyui_not_ready', 'ComfyUI did not answer; it may be restarting'), { 'retry-after': '3' });
      return false;
    }
    this.o.counters.promptsRelayed++;
    let tracked = false;
    if (holder !== undefined && answerOf.status === 200) {
      const id = promptIdOf(answerOf.body);
      if (id !== undefined) {
        this.o.pins.track(id, holder);
        tracked = true;
      }
    }
    const out: OutgoingHttpHeaders = { ...answerOf.headers };
    stripHopByHop(out as IncomingMessage['headers'], { keepUpgrade: false });
    delete out['transfer-encoding'];
    out['content-length'] = answerOf.body.length;
    res.writeHead(answerOf.status, out);
    res.end(answerOf.body);
    return tracked;
  }
}

function failure(w: Wanted, dest: string | undefined, code: string, message: string): ModelFailure {
  return { at: w.at, value: w.value, dest, code, message };
}

function promptIdOf(body: Buffer): string | undefined {
  try {
    const id = (JSON.parse(body.toString('utf8')) as { prompt_id?: unknown }).prompt_id;
    return typeof id === 'string' && id !== '' ? id : undefined;
  } catch {
    return undefined;
  }
}

function answer(res: ServerResponse, status: number, body: ComfyErrorBody, extra: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...extra });
  res.end(text);
}
