import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { FAKE_HF_TOKEN, leakedSecrets, sandbox, type Sandbox } from './support/cli.js';
import { freePort, killAll, readRecord, startRun, STUB, waitFor, type RunningDaemon } from './support/daemon-harness.js';
import { startHub, type Hub } from './support/hub.js';
import { rawRequest } from './support/http-get.js';
import { exists, fileSha256, sha256 } from './support/models.js';
import { makeSafetensors } from './support/safetensors.js';

/**
 * The gate with the real on-demand service, as `modelsync run --gate` runs them: prompts posted
 * through the gate to the ComfyUI stub, models fetched from the Hub stand-in.
 */

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');

let hub: Hub;
let sb: Sandbox | undefined;
let seed = 1000;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
});
afterAll(async () => {
  await hub.close();
});
afterEach(async () => {
  await killAll();
  hub.clearFaults();
  await sb?.cleanup();
  sb = undefined;
});

interface HubModel {
  readonly repo: string;
  readonly file: string;
  readonly uri: string;
  readonly content: Buffer;
  readonly sha256: string;
}

function hubModel(repo: string, file: string, bytes = 40_000): HubModel {
  const content = makeSafetensors(bytes, seed++);
  hub.addRepo({ id: repo, files: [{ path: file, content }] });
  return { repo, file, uri: `hf://${repo}/${file}`, content, sha256: sha256(content) };
}

interface Gated {
  readonly d: RunningDaemon;
  readonly gate: string;
  readonly comfy: string;
  readonly record: string;
}

async function startGated(s: Sandbox, onDemand: string, o: { run?: string[]; env?: Record<string, string>; stub?: string[] } = {}): Promise<Gated> {
  await writeFile(s.manifest.replace(/\.json$/, '.yaml'), `version: 1\nmodels: []\n${onDemand}`);
  const manifest = s.manifest.replace(/\.json$/, '.yaml');
  const [gatePort, comfyPort, control] = [await freePort(), await freePort(), await freePort()];
  const record = path.join(s.dir, `stub-${comfyPort}.json`);
  const args = ['--manifest', manifest, '--gate', `127.0.0.1:${gatePort}`, ...(o.run ?? []), '--', process.execPath, STUB, '--port', String(comfyPort), '--stub-record', record, '--stub-models-dir', s.models, ...(o.stub ?? [])];
  const d = startRun(args, s.env({ MODELSYNC_GATE_POLL_MS: '100', MODELSYNC_PROBE_INTERVAL_MS: '100', ...o.env }), control, [record]);
  const g = { d, gate: `http://127.0.0.1:${gatePort}`, comfy: `http://127.0.0.1:${comfyPort}`, record };
  await waitFor('ComfyUI through the gate', async () => (await rawRequest(`${g.gate}/system_stats`).catch(() => undefined))?.status === 200);
  return g;
}

const policy = (maxBytes: string, allow = '"hf://*"'): string => `on_demand:\n  allow: [${allow}]\n  max_bytes: ${maxBytes}\n`;

async function post(gate: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await rawRequest(`${gate}/prompt`, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json' }, timeoutMs: 30_000 });
  return { status: r.status, json: JSON.parse(r.body.toString()) as Record<string, unknown> };
}

async function seenPrompts(comfy: string): Promise<string[]> {
  const list = JSON.parse((await rawRequest(`${comfy}/stub/requests`)).body.toString()) as { method: string; url: string; body?: string }[];
  return list.filter((q) => q.method === 'POST' && q.url.endsWith('/prompt')).map((q) => q.body ?? '');
}

async function history(comfy: string, id: string): Promise<{ status?: { completed: boolean } } | undefined> {
  const h = JSON.parse((await rawRequest(`${comfy}/history/${id}`)).body.toString()) as Record<string, { status?: { completed: boolean } }>;
  return h[id];
}

const lora = (node: string, value: string): Record<string, unknown> => ({ [node]: { class_type: 'LoraLoader', inputs: { lora_name: value, strength_model: 1 } } });

describe('the gate with models on demand', () => {
  it('a workflow from ComfyUI\'s own templates, posted as its frontend posts it: its models fetched, verified, then it runs', async () => {
    sb = await sandbox(hub.endpoint);
    // The template's own URLs (huggingface.co/Comfy-Org/z_image_turbo), served by the stand-in:
    // a Hub resolve URL is read as the hf:// source it names, and HF_ENDPOINT moves the Hub.
    const paths = ['split_files/text_encoders/qwen_3_4b.safetensors', 'split_files/diffusion_models/z_image_turbo_bf16.safetensors', 'split_files/vae/ae.safetensors'];
    const files = paths.map((p, i) => ({ path: p, content: makeSafetensors(30_000 + i, seed++) }));
    hub.addRepo({ id: 'Comfy-Org/z_image_turbo', files });
    const g = await startGated(sb, policy('1G', '"hf://Comfy-Org/*"'));
    const workflow = JSON.parse(await readFile(path.join(FIXTURES, 'comfyui-template-text-to-image.json'), 'utf8')) as unknown;
    const body = JSON.parse(await readFile(path.join(FIXTURES, 'comfyui-template-text-to-image.prompt.json'), 'utf8')) as { prompt: unknown };
    const r = await post(g.gate, { client_id: 'browser-tab', prompt: body.prompt, extra_data: { extra_pnginfo: { workflow } } });
    expect(r.status).toBe(200);
    for (const [dest, f] of [['text_encoders/qwen_3_4b.safetensors', files[0]], ['diffusion_models/z_image_turbo_bf16.safetensors', files[1]], ['vae/ae.safetensors', files[2]]] as const) {
      expect(await fileSha256(path.join(sb.models, dest))).toBe(sha256(f?.content ?? Buffer.alloc(0)));
    }
    const id = String(r.json.prompt_id);
    await waitFor('the prompt to run', async () => (await history(g.comfy, id))?.status?.completed === true);
    expect(leakedSecrets(g.d.stdout(), g.d.stderr())).toEqual([]);
  });

  it('an API-format prompt with URL inputs: fetched, rewritten to the local names, relayed', async () => {
    sb = await sandbox(hub.endpoint);
    const l = hubModel('test-org/gate-lora', 'loras/film.safetensors');
    const c = hubModel('test-org/gate-ckpt', 'base.safetensors');
    const g = await startGated(sb, policy('1G'));
    const ckptUrl = `${hub.endpoint}/${c.repo}/resolve/main/${c.file}`;
    const text = `{"prompt":{"1":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":"${ckptUrl}"}},"2":{"class_type":"LoraLoader","inputs":{"lora_name":"${l.uri}","seed":18446744073709551615}}}}`;
    const r = await post(g.gate, text);
    expect(r.status).toBe(200);
    expect(await seenPrompts(g.comfy)).toEqual([text.replace(ckptUrl, 'base.safetensors').replace(l.uri, 'film.safetensors')]);
    expect(await fileSha256(path.join(sb.models, 'loras/film.safetensors'))).toBe(l.sha256);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/base.safetensors'))).toBe(c.sha256);
  });

  it('refused by the policy: 400 in ComfyUI\'s shape naming the node and the model; ComfyUI never sees it', async () => {
    sb = await sandbox(hub.endpoint);
    const l = hubModel('elsewhere/lora', 'x.safetensors');
    const g = await startGated(sb, policy('1G', '"hf://allowed-org/*"'));
    const r = await post(g.gate, { prompt: lora('9', l.uri) });
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ error: { type: 'prompt_models_unavailable' }, node_errors: { '9': { class_type: 'LoraLoader', errors: [{ extra_info: { code: 'E_POLICY', received_value: l.uri } }] } } });
    expect(await seenPrompts(g.comfy)).toEqual([]);
    expect(await exists(path.join(sb.models, 'loras/x.safetensors'))).toBe(false);
    // Without an on_demand key at all, the same prompt is refused with the policy named.
    const sb2 = sb;
    await killAll();
    const g2 = await startGated(sb2, '');
    const r2 = await post(g2.gate, { prompt: lora('9', l.uri) });
    expect(r2.status).toBe(400);
    expect(JSON.stringify(r2.json)).toMatch(/on_demand/);
  });

  it('two prompts at once needing the same LoRA fetch it once', async () => {
    sb = await sandbox(hub.endpoint);
    const l = hubModel('test-org/shared-lora', 'shared.safetensors', 300_000);
    hub.setFaults(l.sha256, { bytesPerSecond: 600_000 });
    const g = await startGated(sb, policy('1G'));
    hub.resetStats();
    const [a, b] = await Promise.all([post(g.gate, { prompt: lora('1', l.uri) }), post(g.gate, { prompt: lora('1', l.uri) })]);
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(hub.stats.bytesServed.get(l.sha256)).toBe(l.content.length);
    expect((await seenPrompts(g.comfy)).every((p) => p.includes('"shared.safetensors"'))).toBe(true);
  });

  it('evicts under max_bytes, never a model of a prompt that is running or queued', async () => {
    sb = await sandbox(hub.endpoint);
    const size = 100_000;
    const [l1, l2, l3] = [1, 2, 3].map((i) => hubModel(`test-org/evict-${i}`, `e${i}.safetensors`, size));
    // Room for two of them.
    const g = await startGated(sb, policy(String(Math.floor((l1?.content.length ?? 0) * 2.5))));
    const at = (n: number): string => path.join(sb?.models ?? '', `loras/e${n}.safetensors`);
    const pinned = async (): Promise<number> => ((await g.d.status()) as unknown as { gate: { prompts: { pinnedPrompts: number } } }).gate.prompts.pinnedPrompts;
    // A runs (and is held running) with l1; B waits behind it in ComfyUI's queue with l2.
    expect((await post(g.gate, { prompt_id: 'A', prompt: lora('1', l1?.uri ?? ''), extra_data: { stub_hold: true } })).status).toBe(200);
    expect((await post(g.gate, { prompt_id: 'B', prompt: lora('1', l2?.uri ?? '') })).status).toBe(200);
    expect(await pinned()).toBe(2);
    // C's model would need one of theirs evicted: refused, with the policy named; both stay.
    const c = await post(g.gate, { prompt: lora('1', l3?.uri ?? '') });
    expect(c.status).toBe(400);
    expect(JSON.stringify(c.json)).toMatch(/max_bytes/);
    expect([await exists(at(1)), await exists(at(2)), await exists(at(3))]).toEqual([true, true, false]);
    // A ends, then B runs and ends: nothing is pinned, and C gets room by evicting the least
    // recently used (l1).
    await rawRequest(`${g.comfy}/stub/release`, { method: 'POST', body: JSON.stringify({ prompt_id: 'A' }) });
    await waitFor('A and B to have run', async () => (await history(g.comfy, 'B'))?.status?.completed === true && (await pinned()) === 0);
    expect((await post(g.gate, { prompt: lora('1', l3?.uri ?? '') })).status).toBe(200);
    expect([await exists(at(1)), await exists(at(2)), await exists(at(3))]).toEqual([false, true, true]);
    const st = (await g.d.status()) as unknown as { onDemand?: { evictions: number } };
    expect(st.onDemand?.evictions).toBe(1);
  });

  it('a prompt while ComfyUI restarts gets 503 and Retry-After; nothing is fetched for it', async () => {
    sb = await sandbox(hub.endpoint);
    const l = hubModel('test-org/restart-lora', 'r.safetensors');
    const g = await startGated(sb, policy('1G'), { env: { MODELSYNC_RESTART_BASE_MS: '2000' } });
    const rec = await waitFor('the stub record', () => readRecord(g.record));
    process.kill(rec.pid, 'SIGKILL');
    // A prompt that came in just before the supervisor saw the exit is handled (and may fetch):
    // this one comes once the daemon knows.
    await waitFor('the restart to begin', async () => (await g.d.status()).comfyui?.phase !== 'running');
    const r = await waitFor('a 503', async () => {
      const x = await rawRequest(`${g.gate}/prompt`, { method: 'POST', body: JSON.stringify({ prompt: lora('1', l.uri) }) });
      return x.status === 503 ? x : undefined;
    });
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    expect(await exists(path.join(sb.models, 'loras/r.safetensors'))).toBe(false);
  });
});

describe('--gate-frontend-downloads (experimental)', () => {
  it('tells the frontend it may download, downloads what it asks into the store, reports every field of progress', async () => {
    sb = await sandbox(hub.endpoint);
    const m = hubModel('test-org/frontend-dl', 'f.safetensors', 200_000);
    hub.setFaults(m.sha256, { bytesPerSecond: 400_000 });
    const g = await startGated(sb, policy('1G'), { run: ['--gate-frontend-downloads'] });
    const ws = new WebSocket(`${g.gate.replace('http', 'ws')}/ws?clientId=tab`);
    const got: { type: string; data: Record<string, unknown> }[] = [];
    ws.on('message', (d: Buffer, bin: boolean) => void (bin ? undefined : got.push(JSON.parse(d.toString()) as { type: string; data: Record<string, unknown> })));
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true } }));
    await waitFor('feature_flags', () => got.some((x) => x.type === 'feature_flags'));
    expect(got.find((x) => x.type === 'feature_flags')?.data).toMatchObject({ server_side_model_downloads: true, supports_preview_metadata: true });

    const url = `${hub.endpoint}/${m.repo}/resolve/main/${m.file}`;
    const api = async (p: string, body?: unknown, method = 'POST'): Promise<{ status: number; json: Record<string, unknown> }> => {
      const r = await rawRequest(`${g.gate}/api/download${p}`, { method, ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }) });
      return { status: r.status, json: JSON.parse(r.body.toString()) as Record<string, unknown> };
    };
    const before = await api('/availability', { models: { 'loras/f.safetensors': url, 'loras/no.safetensors': 'https://example.org/no.safetensors' } });
    expect(before.json).toMatchObject({ models: { 'loras/f.safetensors': { url_allowed: true, state: 'missing' }, 'loras/no.safetensors': { url_allowed: false } } });
    const q = await api('/enqueue', { url, model_id: 'loras/f.safetensors', expected_sha256: m.sha256 });
    expect(q.status).toBe(202);
    expect(q.json).toMatchObject({ accepted: true });
    const id = String(q.json.download_id);
    await waitFor('completed', () => got.some((x) => x.type === 'download_progress' && x.data.download_id === id && x.data.status === 'completed'));
    const progress = got.filter((x) => x.type === 'download_progress').map((x) => x.data);
    for (const p of progress) {
      for (const k of ['download_id', 'model_id', 'url', 'status', 'priority', 'total_bytes', 'bytes_done', 'progress', 'speed_bps', 'eta_seconds', 'segments', 'error', 'created_at', 'updated_at']) expect(p).toHaveProperty(k);
    }
    expect(progress.at(-1)).toMatchObject({ status: 'completed', bytes_done: m.content.length, total_bytes: m.content.length, progress: 1 });
    expect(await fileSha256(path.join(sb.models, 'loras/f.safetensors'))).toBe(m.sha256);
    expect((await api('', undefined, 'GET')).json).toMatchObject({ downloads: [{ download_id: id, status: 'completed' }] });

    expect((await api('/enqueue', { url, model_id: 'loras/f.safetensors' })).json).toMatchObject({ error: { code: 'ALREADY_AVAILABLE' } });
    expect((await api('/enqueue', { url: 'https://example.org/a.safetensors', model_id: 'loras/a.safetensors' })).json).toMatchObject({ error: { code: 'URL_NOT_ALLOWED' } });
    expect((await api('/enqueue', { url, model_id: '../../etc/x.safetensors' })).json).toMatchObject({ error: { code: 'INVALID_MODEL_ID' } });
    expect((await api('/enqueue', { url, model_id: 'loras/f.exe' })).json).toMatchObject({ error: { code: 'INVALID_MODEL_ID' } });
    const bad = await rawRequest(`${g.gate}/api/download/enqueue`, { method: 'POST', body: '{nope', headers: { 'content-type': 'application/json' } });
    expect(JSON.parse(bad.body.toString())).toMatchObject({ error: { code: 'INVALID_JSON' } });
    expect((await api(`/${id}/pause`)).status).toBe(501);
    expect((await api('/nosuch/cancel')).json).toMatchObject({ error: { code: 'NOT_FOUND' } });
    expect((await api('/clear')).json).toEqual({ deleted: 1 });
    ws.close();
  });
});
