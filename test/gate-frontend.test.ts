import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { withDownloadsFlag } from '../src/gate/download-status.js';
import { FrontendDownloads } from '../src/gate/frontend-downloads.js';
import { waitFor } from './support/daemon-harness.js';
import { FakeModels } from './support/fake-models.js';
import { gateRig, type GateRig } from './support/gate-rig.js';
import { rawRequest } from './support/http-get.js';

/**
 * --gate-frontend-downloads: ComfyUI's frontend download API and the websocket relayed message by
 * message, against the real ComfyUI stub, with the on-demand service played in memory (the real
 * one: gate-ondemand.test.ts).
 */

const TOKEN = 'gate-frontend-token-0123456789abcdef';
const URL_OK = 'https://huggingface.co/org/loras/resolve/main/f.safetensors';

let rig: GateRig | undefined;

afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

interface Setup {
  readonly gate: string;
  readonly comfy: string;
  readonly models: FakeModels;
  readonly dir: string;
}

async function setup(token?: string): Promise<Setup> {
  rig = await gateRig({ settings: { frontendDownloads: true } });
  const models = new FakeModels(rig.sb.models);
  models.refuse = (r) => (String(r.url).startsWith('https://huggingface.co/') ? undefined : 'on_demand.allow has no pattern for it');
  const frontend = new FrontendDownloads({ models, modelsDir: rig.sb.models, log: rig.log, credentials: { huggingface: true, civitai: false } });
  const gate = await rig.start({ token, frontend, onClose: () => frontend.close() });
  return { gate, comfy: rig.comfy, models, dir: rig.sb.models };
}

interface Msg {
  type: string;
  data: Record<string, unknown>;
}

function openWs(url: string, headers: Record<string, string> = {}): { ws: WebSocket; text: Msg[]; binary: Buffer[]; opened: Promise<void> } {
  const ws = new WebSocket(url, { headers });
  const out = { ws, text: [] as Msg[], binary: [] as Buffer[], opened: new Promise<void>((r, j) => (ws.once('open', () => r()), ws.once('error', j))) };
  ws.on('message', (d: Buffer, isBinary: boolean) => {
    if (isBinary) out.binary.push(d);
    else out.text.push(JSON.parse(d.toString()) as Msg);
  });
  return out;
}

async function api(base: string, p: string, body?: unknown, o: { method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await rawRequest(`${base}/api/download${p}`, {
    method: o.method ?? 'POST',
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    headers: { 'content-type': 'application/json', ...o.headers },
  });
  return { status: r.status, json: JSON.parse(r.body.toString()) as Record<string, unknown> };
}

describe('--gate-frontend-downloads', () => {
  it('sets server_side_model_downloads in the feature_flags answer, and relays every other message as it came', async () => {
    const s = await setup();
    const c = openWs(`${s.gate.replace('http', 'ws')}/ws?clientId=tab1`, { origin: s.gate, cookie: 'theme=dark' });
    await c.opened;
    c.ws.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true } }));
    await waitFor('feature_flags', () => c.text.some((m) => m.type === 'feature_flags'));
    expect(c.text[0]).toMatchObject({ type: 'status', data: { sid: 'tab1' } });
    expect(c.text.find((m) => m.type === 'feature_flags')?.data).toEqual({ supports_preview_metadata: true, max_upload_size: 104857600, extension: { manager: { supports_v4: true } }, server_side_model_downloads: true });
    // The client's own message reached ComfyUI unchanged.
    const clients = JSON.parse((await rawRequest(`${s.comfy}/stub/ws-clients`)).body.toString()) as { sid: string; featureFlags: unknown }[];
    expect(clients.find((x) => x.sid === 'tab1')?.featureFlags).toEqual({ supports_preview_metadata: true });
    // The handshake ComfyUI saw: the browser's Host, Origin and cookies.
    const seen = (JSON.parse((await rawRequest(`${s.comfy}/stub/requests`)).body.toString()) as { url: string; headers: Record<string, string> }[]).find((q) => q.url === '/ws?clientId=tab1');
    expect(seen?.headers).toMatchObject({ host: s.gate.slice('http://'.length), origin: s.gate, cookie: 'theme=dark' });
    // Execution messages and a binary preview, for a prompt run by this client.
    await rawRequest(`${s.comfy}/prompt`, { method: 'POST', body: JSON.stringify({ client_id: 'tab1', prompt_id: 'p1', prompt: {} }) });
    await waitFor('execution_success', () => c.text.some((m) => m.type === 'execution_success' && m.data.prompt_id === 'p1'));
    expect(c.binary[0]?.readUInt32BE(0)).toBe(1);
    // A look-alike that is not the feature_flags message is left alone.
    expect(withDownloadsFlag('{"type":"status","data":{"note":"feature_flags"}}')).toBe('{"type":"status","data":{"note":"feature_flags"}}');
    expect(withDownloadsFlag('{"type":"feature_flags","data":[1]}')).toBe('{"type":"feature_flags","data":[1]}');
    c.ws.close();
  });

  it('a ComfyUI that goes away closes the relayed websocket; a new one is refused with 503 until it is back', async () => {
    const s = await setup();
    const c = openWs(`${s.gate.replace('http', 'ws')}/ws`);
    await c.opened;
    const closed = new Promise<number>((r) => c.ws.once('close', (code) => r(code)));
    rig?.stopStub();
    expect(await closed).toBeGreaterThan(0);
    const again = openWs(`${s.gate.replace('http', 'ws')}/ws`);
    await expect(again.opened).rejects.toThrow(/503/);
  });

  it('enqueue downloads through the service, with download_progress carrying every field to every client', async () => {
    const s = await setup();
    s.models.size = 1000;
    const c = openWs(`${s.gate.replace('http', 'ws')}/ws`);
    await c.opened;
    const before = await api(s.gate, '/availability', { models: { 'loras/f.safetensors': URL_OK, 'loras/g.safetensors': 'https://elsewhere.example/g.safetensors' } });
    expect(before.json).toEqual({ models: { 'loras/f.safetensors': { url_allowed: true, state: 'missing' }, 'loras/g.safetensors': { url_allowed: false, state: 'missing' } } });
    const sha = 'ab'.repeat(32);
    const q = await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/f.safetensors', expected_sha256: sha.toUpperCase() });
    expect(q.status).toBe(202);
    expect(q.json).toMatchObject({ accepted: true, download_id: expect.any(String) as string });
    expect(s.models.asked[0]?.requests[0]).toEqual({ name: 'f.safetensors', url: URL_OK, directory: 'loras', hash: sha, hash_type: 'sha256' });
    const id = String(q.json.download_id);
    await waitFor('completed', () => c.text.some((m) => m.type === 'download_progress' && m.data.status === 'completed'));
    const progress = c.text.filter((m) => m.type === 'download_progress').map((m) => m.data);
    const fields = ['download_id', 'model_id', 'url', 'status', 'priority', 'total_bytes', 'bytes_done', 'progress', 'speed_bps', 'eta_seconds', 'segments', 'error', 'created_at', 'updated_at'];
    for (const p of progress) expect(Object.keys(p).sort()).toEqual([...fields].sort());
    expect(progress.map((p) => p.status)).toContain('active');
    expect(progress.find((p) => p.status === 'active' && p.bytes_done === 500)).toMatchObject({ total_bytes: 1000, progress: 0.5, speed_bps: 1000, eta_seconds: 0.5 });
    expect(progress.at(-1)).toMatchObject({ download_id: id, model_id: 'loras/f.safetensors', status: 'completed', bytes_done: 1000, total_bytes: 1000, progress: 1, error: null });
    expect((await api(s.gate, '', undefined, { method: 'GET' })).json).toMatchObject({ downloads: [{ download_id: id, status: 'completed' }] });
    expect((await api(s.gate, '/availability', { models: { 'loras/f.safetensors': URL_OK } })).json).toMatchObject({ models: { 'loras/f.safetensors': { state: 'available' } } });
    expect((await api(s.gate, `/${id}/priority`, { priority: 5 })).json).toEqual({ ok: true });
    expect((await api(s.gate, '/clear')).json).toEqual({ deleted: 1 });
    c.ws.close();
  });

  it('answers with the frontend\'s error codes, and says what it cannot do', async () => {
    const s = await setup();
    await mkdir(path.join(s.dir, 'loras'), { recursive: true });
    await writeFile(path.join(s.dir, 'loras', 'here.safetensors'), 'x');
    const code = async (p: string, body: unknown): Promise<unknown> => (await api(s.gate, p, body)).json.error;
    expect(await code('/enqueue', '{not json')).toMatchObject({ code: 'INVALID_JSON' });
    expect(await code('/enqueue', { model_id: 'loras/x.safetensors' })).toMatchObject({ code: 'INVALID_BODY' });
    expect(await code('/enqueue', { url: URL_OK, model_id: 'loras/x.safetensors', expected_sha256: 'nothex' })).toMatchObject({ code: 'INVALID_BODY' });
    expect(await code('/enqueue', { url: URL_OK, model_id: '../../etc/x.safetensors' })).toMatchObject({ code: 'INVALID_MODEL_ID' });
    expect(await code('/enqueue', { url: URL_OK, model_id: 'x.safetensors' })).toMatchObject({ code: 'INVALID_MODEL_ID' });
    expect(await code('/enqueue', { url: URL_OK, model_id: 'loras/run.sh' })).toMatchObject({ code: 'INVALID_MODEL_ID' });
    // Refused by the gate before the service is even asked.
    expect(s.models.asked).toEqual([]);
    expect(await code('/enqueue', { url: 'https://elsewhere.example/a.safetensors', model_id: 'loras/a.safetensors' })).toMatchObject({ code: 'URL_NOT_ALLOWED' });
    expect(await code('/enqueue', { url: URL_OK, model_id: 'loras/here.safetensors' })).toMatchObject({ code: 'ALREADY_AVAILABLE' });
    expect((await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/here.safetensors' })).status).toBe(409);
    let open: () => void = () => undefined;
    s.models.gate = new Promise((r) => (open = r));
    const first = await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/slow.safetensors' });
    expect(first.status).toBe(202);
    const again = await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/slow.safetensors' });
    expect(again).toMatchObject({ status: 409, json: { error: { code: 'ALREADY_DOWNLOADING' } } });
    const id = String(first.json.download_id);
    expect((await api(s.gate, `/${id}`, undefined, { method: 'DELETE' })).json).toMatchObject({ error: { code: 'DOWNLOAD_ACTIVE' } });
    for (const a of ['pause', 'resume', 'cancel']) expect((await api(s.gate, `/${id}/${a}`)).status).toBe(501);
    open();
    await waitFor('the download to end', async () => ((await api(s.gate, '', undefined, { method: 'GET' })).json.downloads as { status: string }[])[0]?.status === 'completed');
    expect((await api(s.gate, `/${id}`, undefined, { method: 'DELETE' })).json).toEqual({ deleted: true });
    expect((await api(s.gate, '/0123abcd/cancel')).json).toMatchObject({ error: { code: 'NOT_FOUND' } });
    expect((await api(s.gate, '/auth', undefined, { method: 'GET' })).json).toEqual({
      providers: [
        { provider: 'huggingface', env_key_present: true, logged_in: true, login_in_progress: false },
        { provider: 'civitai', env_key_present: false, logged_in: false, login_in_progress: false },
      ],
    });
    expect((await api(s.gate, '/auth/huggingface/login')).json).toMatchObject({ error: { code: 'OAUTH_NOT_CONFIGURED' } });
    const asked = s.models.asked.length;
    const big = await rawRequest(`${s.gate}/api/download/enqueue`, { method: 'POST', body: JSON.stringify({ url: URL_OK, model_id: 'loras/pad.safetensors', pad: 'a'.repeat(100_000) }) });
    expect(JSON.parse(big.body.toString())).toMatchObject({ error: { code: 'INVALID_BODY' } });
    expect(s.models.asked.length).toBe(asked);
  });

  it('with a token, a browser logs in once; its cookie works from the gate\'s own pages only, and never reaches ComfyUI', async () => {
    const s = await setup(TOKEN);
    expect((await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/t.safetensors' })).status).toBe(401);
    const page = await rawRequest(`${s.gate}/modelsync/login`);
    expect(page.body.toString()).toContain('name="token"');
    const wrong = await rawRequest(`${s.gate}/modelsync/login`, { method: 'POST', body: 'token=not-it', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(wrong.status).toBe(401);
    expect(wrong.headers['set-cookie']).toBeUndefined();
    const login = await rawRequest(`${s.gate}/modelsync/login`, { method: 'POST', body: `token=${encodeURIComponent(TOKEN)}`, headers: { 'content-type': 'application/x-www-form-urlencoded', origin: s.gate } });
    expect(login.status).toBe(303);
    const cookie = String(login.headers['set-cookie']?.[0] ?? '');
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toContain(TOKEN);
    const session = cookie.split(';')[0] ?? '';
    const own = await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/t.safetensors' }, { headers: { cookie: session, origin: s.gate, 'sec-fetch-site': 'same-origin' } });
    expect(own.status).toBe(202);
    // The same cookie, sent by a page of another origin (another port counts): refused.
    const other = await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/u.safetensors' }, { headers: { cookie: session, origin: 'http://127.0.0.1:1' } });
    expect(other.status).toBe(403);
    const site = await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/u.safetensors' }, { headers: { cookie: session, 'sec-fetch-site': 'same-site' } });
    expect(site.status).toBe(403);
    const bearer = await api(s.gate, '/enqueue', { url: URL_OK, model_id: 'loras/v.safetensors' }, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(bearer.status).toBe(202);
    // Relayed requests lose our cookie and keep the others.
    await rawRequest(`${s.gate}/some/page`, { headers: { cookie: `${session}; theme=dark` } });
    const seen = (JSON.parse((await rawRequest(`${s.comfy}/stub/requests`)).body.toString()) as { url: string; headers: Record<string, string> }[]).find((q) => q.url === '/some/page');
    expect(seen?.headers.cookie).toBe('theme=dark');
  });
});
