import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PromptStats } from '../src/gate/gate.js';
import { PromptGate } from '../src/gate/prompt-gate.js';
import { ComfyWatch } from '../src/gate/comfy-watch.js';
import { PromptPins } from '../src/gate/prompt-pins.js';
import { waitFor } from './support/daemon-harness.js';
import { FakeModels } from './support/fake-models.js';
import { gateRig, type GateRig } from './support/gate-rig.js';
import { rawRequest } from './support/http-get.js';

/**
 * The gate's prompt handling against the real ComfyUI stub, with the on-demand service played
 * by a small in-memory one (the service itself is tested on its own, and with the gate in
 * gate-ondemand.test.ts): what the gate asks for, what it rewrites, what it relays, when it
 * lets the pins go.
 */

const TOKEN = 'gate-prompts-token-0123456789abcdef';
const LORA_HF = 'hf://org/loras@v1/styles/film.safetensors';
const CKPT_URL = 'https://huggingface.co/org/base/resolve/main/base.safetensors';

let rig: GateRig | undefined;

afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

interface Setup {
  readonly gate: string;
  readonly comfy: string;
  readonly models: FakeModels;
  readonly stats: PromptStats;
  readonly pins: PromptPins;
  readonly dir: string;
}

async function setup(o: { token?: string; maxPromptBytes?: number; pinMaxMs?: number } = {}): Promise<Setup> {
  rig = await gateRig({ settings: { maxPromptBytes: o.maxPromptBytes ?? 1024 * 1024 } });
  const { comfy, log, settings } = rig;
  const pins = new PromptPins({ comfyUrl: () => comfy, pollMs: 50, maxMs: o.pinMaxMs ?? 60_000, log });
  // Its messages make the pins look at ComfyUI's queue at once.
  const watch = new ComfyWatch({ comfyUrl: () => comfy, onQueueEvent: () => pins.nudge(), log });
  const models = new FakeModels(rig.sb.models);
  const stats: PromptStats = { promptsRelayed: 0, promptsRefused: 0, pinnedPrompts: 0 };
  const prompts = new PromptGate({ models, pins, modelsDir: rig.sb.models, maxPromptBytes: settings.maxPromptBytes, maxModels: settings.maxModels, log, counters: stats });
  const gate = await rig.start({
    token: o.token,
    prompts,
    onClose: () => {
      watch.close();
      pins.close();
    },
  });
  return { gate, comfy, models, stats, pins, dir: rig.sb.models };
}

async function postPrompt(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown>; headers: Record<string, unknown> }> {
  const r = await rawRequest(`${url}/prompt`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers }, timeoutMs: 20_000 });
  return { status: r.status, json: JSON.parse(r.body.toString()) as Record<string, unknown>, headers: r.headers };
}

async function promptsSeen(comfy: string): Promise<string[]> {
  const list = JSON.parse((await rawRequest(`${comfy}/stub/requests`)).body.toString()) as { method: string; url: string; body?: string; headers: Record<string, string> }[];
  return list.filter((q) => q.method === 'POST' && /\/prompt$/.test(q.url)).map((q) => q.body ?? '');
}

const API_PROMPT = (seedText = '18446744073709551615'): string =>
  `{"client_id":"cli","prompt":{"3":{"class_type":"KSampler","inputs":{"seed":${seedText},"model":["10",0]}},` +
  `"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":"${CKPT_URL}"}},` +
  `"10":{"class_type":"LoraLoader","inputs":{"lora_name":"${LORA_HF}","model":["4",0],"strength_model":1}},` +
  `"6":{"class_type":"CLIPTextEncode","inputs":{"text":"see https://example.org/x.safetensors"}}}}`;

describe('gate: prompts and their models', () => {
  it('fetches URL inputs, rewrites them to the local file name, keeps every other byte, and relays', async () => {
    const s = await setup();
    const r = await postPrompt(s.gate, API_PROMPT());
    expect(r.status).toBe(200);
    expect(typeof r.json.prompt_id).toBe('string');
    expect(s.models.asked[0]?.requests).toEqual([
      { name: 'base.safetensors', url: CKPT_URL, directory: 'checkpoints' },
      { source: LORA_HF, dest: 'loras/film.safetensors' },
    ]);
    const [seen] = await promptsSeen(s.comfy);
    // The seed is beyond what a JavaScript number holds: still the very same digits.
    expect(seen).toBe(API_PROMPT().replace(CKPT_URL, 'base.safetensors').replace(LORA_HF, 'film.safetensors'));
    expect(s.stats.promptsRelayed).toBe(1);
  });

  it('POST /api/prompt, the path ComfyUI\'s frontend posts to, is seen to the same way, written plainly or encoded', async () => {
    const s = await setup();
    for (const p of ['/api/prompt', '/api/%70rompt', '//api//prompt']) {
      const r = await rawRequest(`${s.gate}${p}`, { method: 'POST', body: API_PROMPT(), headers: { 'content-type': 'application/json' }, timeoutMs: 20_000 });
      expect(r.status, p).toBe(200);
    }
    expect(s.models.asked).toHaveLength(3);
    const rewritten = API_PROMPT().replace(CKPT_URL, 'base.safetensors').replace(LORA_HF, 'film.safetensors');
    expect(await promptsSeen(s.comfy)).toEqual([rewritten, rewritten, rewritten]);
  });

  it('pins the models until ComfyUI has run the prompt, not before and not after', async () => {
    const s = await setup();
    const body = JSON.stringify({ prompt_id: 'held-1', prompt: { '10': { class_type: 'LoraLoader', inputs: { lora_name: LORA_HF } } }, extra_data: { stub_hold: true } });
    expect((await postPrompt(s.gate, body)).status).toBe(200);
    const holder = s.models.asked[0]?.holder ?? '';
    // Running: a websocket claim that it has finished is not taken for it.
    await rawRequest(`${s.comfy}/stub/broadcast`, { method: 'POST', body: JSON.stringify({ type: 'execution_success', data: { prompt_id: 'held-1' } }) });
    await waitFor('a few queue reads', async () => {
      await new Promise((r) => setTimeout(r, 300));
      return true;
    });
    expect(s.models.holders.get(holder)?.released).toBe(false);
    expect(s.pins.size).toBe(1);
    await rawRequest(`${s.comfy}/stub/release`, { method: 'POST', body: JSON.stringify({ prompt_id: 'held-1' }) });
    await waitFor('the pin to go', () => s.models.holders.get(holder)?.released === true);
    expect(s.pins.size).toBe(0);
  });

  it('a prompt_id another prompt already has (a client chooses it) keeps both pinned until neither is queued', async () => {
    const s = await setup();
    const body = (hold: boolean): string => JSON.stringify({ prompt_id: 'dup', prompt: { '10': { class_type: 'LoraLoader', inputs: { lora_name: LORA_HF } } }, extra_data: { stub_hold: hold } });
    expect((await postPrompt(s.gate, body(true))).status).toBe(200);
    expect((await postPrompt(s.gate, body(true))).status).toBe(200);
    const [first, second] = s.models.asked.map((a) => s.models.holders.get(a.holder ?? ''));
    // The first one ends; the second, same id, now runs: neither pin goes.
    await rawRequest(`${s.comfy}/stub/release`, { method: 'POST', body: JSON.stringify({ prompt_id: 'dup' }) });
    await waitFor('the second to run', async () => {
      const q = JSON.parse((await rawRequest(`${s.comfy}/queue`)).body.toString()) as { queue_running: unknown[][]; queue_pending: unknown[][] };
      return q.queue_running.length === 1 && q.queue_pending.length === 0;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect([first?.released, second?.released]).toEqual([false, false]);
    await rawRequest(`${s.comfy}/stub/release`, { method: 'POST', body: JSON.stringify({ prompt_id: 'dup' }) });
    await waitFor('both pins to go', () => first?.released === true && second?.released === true);
  });

  it('a prompt that never ends does not pin its models for ever', async () => {
    const s = await setup({ pinMaxMs: 300 });
    const body = JSON.stringify({ prompt_id: 'stuck', prompt: { '10': { class_type: 'LoraLoader', inputs: { lora_name: LORA_HF } } }, extra_data: { stub_hold: true } });
    expect((await postPrompt(s.gate, body)).status).toBe(200);
    const holder = s.models.asked[0]?.holder ?? '';
    await waitFor('the bound to let the pin go', () => s.models.holders.get(holder)?.released === true);
    // Still running in ComfyUI: only the bound let it go.
    const q = JSON.parse((await rawRequest(`${s.comfy}/queue`)).body.toString()) as { queue_running: unknown[][] };
    expect(q.queue_running[0]?.[1]).toBe('stuck');
  });

  it('a refused model answers 400 in ComfyUI\'s shape under its node, and ComfyUI never sees the prompt', async () => {
    const s = await setup();
    s.models.refuse = (r) => (r.source === LORA_HF ? 'on_demand.allow has no pattern for hf://org/loras@v1/styles/film.safetensors' : undefined);
    const r = await postPrompt(s.gate, API_PROMPT());
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({
      error: { type: 'prompt_models_unavailable' },
      node_errors: { '10': { class_type: 'LoraLoader', errors: [{ type: 'model_unavailable', extra_info: { input_name: 'lora_name', received_value: LORA_HF, code: 'E_POLICY', dest: 'loras/film.safetensors' } }] } },
    });
    expect(await promptsSeen(s.comfy)).toEqual([]);
    expect([...s.models.holders.values()].every((h) => h.released)).toBe(true);
  });

  it('a model that fails to download, or lands in another folder, fails the prompt the same way', async () => {
    const s = await setup();
    s.models.fail = (r) => (r.url === CKPT_URL ? 'sha256 mismatch' : undefined);
    const r = await postPrompt(s.gate, API_PROMPT());
    expect(r.status).toBe(400);
    expect((r.json.node_errors as Record<string, unknown>)['4']).toMatchObject({ errors: [{ extra_info: { code: 'E_HASH_MISMATCH' } }] });
    s.models.fail = undefined;
    s.models.elsewhere = 'vae/base.safetensors';
    const r2 = await postPrompt(s.gate, API_PROMPT());
    expect(r2.status).toBe(400);
    expect(await promptsSeen(s.comfy)).toEqual([]);
  });

  it('declared workflow models: fetched when missing and used, left alone when unused, pinned when on disk', async () => {
    const s = await setup();
    await mkdir(path.join(s.dir, 'vae'), { recursive: true });
    await writeFile(path.join(s.dir, 'vae', 'ae.safetensors'), 'x');
    const workflow = {
      nodes: [{ type: 'UNETLoader', properties: { models: [{ name: 'unet.safetensors', url: 'https://huggingface.co/o/u/resolve/main/unet.safetensors', directory: 'diffusion_models', hash: 'ab'.repeat(32), hash_type: 'sha256' }] } }],
      models: [
        { name: 'ae.safetensors', url: 'https://huggingface.co/o/v/resolve/main/ae.safetensors', directory: 'vae' },
        { name: 'bypassed.safetensors', url: 'https://huggingface.co/o/b/resolve/main/bypassed.safetensors', directory: 'loras' },
      ],
    };
    const prompt = { '1': { class_type: 'UNETLoader', inputs: { unet_name: 'unet.safetensors' } }, '2': { class_type: 'VAELoader', inputs: { vae_name: 'ae.safetensors' } } };
    const r = await postPrompt(s.gate, JSON.stringify({ prompt, extra_data: { extra_pnginfo: { workflow } } }));
    expect(r.status).toBe(200);
    const all = s.models.asked.flatMap((a) => a.requests.map((q) => q.name));
    expect(all.sort()).toEqual(['ae.safetensors', 'unet.safetensors']);
    expect(s.models.asked.find((a) => a.requests[0]?.name === 'unet.safetensors')?.requests[0]).toMatchObject({ hash: 'ab'.repeat(32), hash_type: 'sha256' });
  });

  it('beyond loopback, downloads need the token; what is on disk does not', async () => {
    const s = await setup({ token: TOKEN });
    const denied = await postPrompt(s.gate, API_PROMPT());
    expect(denied.status).toBe(401);
    expect(denied.headers['www-authenticate']).toMatch(/Bearer/);
    expect(denied.json).toMatchObject({ error: { type: 'downloads_not_authorized' } });
    expect(s.models.asked).toEqual([]);
    const wrong = await postPrompt(s.gate, API_PROMPT(), { authorization: 'Bearer not-the-token-at-all-0000' });
    expect(wrong.status).toBe(401);
    const ok = await postPrompt(s.gate, API_PROMPT(), { authorization: `Bearer ${TOKEN}` });
    expect(ok.status).toBe(200);
    // A prompt whose models are all on disk needs nothing from anyone.
    const plain = await postPrompt(s.gate, JSON.stringify({ prompt: { '4': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'base.safetensors' } } } }));
    expect(plain.status).toBe(200);
  });

  it('without a token, a web page elsewhere cannot make the gate download (Origin, DNS rebinding)', async () => {
    const s = await setup();
    const page = await postPrompt(s.gate, API_PROMPT(), { origin: 'http://evil.example' });
    expect(page.status).toBe(403);
    const rebound = await rawRequest(`${s.gate}/prompt`, { method: 'POST', body: API_PROMPT(), headers: { host: 'evil.example:8188', 'content-type': 'text/plain' } });
    expect(rebound.status).toBe(403);
    expect(s.models.asked).toEqual([]);
    // ComfyUI's own page, served through the gate, is the gate's own origin.
    const own = await postPrompt(s.gate, API_PROMPT(), { origin: s.gate, 'sec-fetch-site': 'same-origin' });
    expect(own.status).toBe(200);
  });

  it('hostile prompts: too big, too deep, a name that leaves the folder, URLs on other nodes', async () => {
    const s = await setup({ maxPromptBytes: 64 * 1024 });
    const big = await rawRequest(`${s.gate}/prompt`, { method: 'POST', body: `{"prompt":{"1":{"class_type":"X","inputs":{"t":"${'a'.repeat(200 * 1024)}"}}}}` });
    expect(big.status).toBe(413);
    expect(JSON.parse(big.body.toString())).toMatchObject({ error: { type: 'prompt_too_large' } });
    const deep = await rawRequest(`${s.gate}/prompt`, { method: 'POST', body: `{"prompt":${'['.repeat(1000)}${']'.repeat(1000)}}` });
    expect(JSON.parse(deep.body.toString())).toMatchObject({ error: { type: 'prompt_too_deep' } });
    const escape = await postPrompt(s.gate, JSON.stringify({ prompt: { '7': { class_type: 'LoraLoader', inputs: { lora_name: 'https://x.org/%2e%2e%2f%2e%2e%2fcheckpoints%2fevil.safetensors' } } } }));
    expect(escape.status).toBe(400);
    expect(escape.json).toMatchObject({ node_errors: { '7': { errors: [{ extra_info: { code: 'E_USAGE' } }] } } });
    const declaredEscape = await postPrompt(
      s.gate,
      JSON.stringify({ prompt: { '1': { class_type: 'LoraLoader', inputs: { lora_name: '../../../etc/passwd' } } }, extra_data: { extra_pnginfo: { workflow: { models: [{ name: '../../../etc/passwd', url: 'https://x.org/a.safetensors', directory: 'loras' }] } } } }),
    );
    // Never looked for on disk, and refused by the service's dest rules.
    expect(declaredEscape.status).toBe(400);
    expect(declaredEscape.json).toMatchObject({ node_errors: { '1': { errors: [{ extra_info: { code: 'E_MANIFEST' } }] } } });
    const notLoader = JSON.stringify({ prompt: { '1': { class_type: 'LoadImageFromUrl', inputs: { url: 'https://x.org/cat.safetensors' } } } });
    const before = s.models.asked.length;
    await postPrompt(s.gate, notLoader);
    expect(s.models.asked.length).toBe(before);
    expect(await promptsSeen(s.comfy)).toEqual([notLoader]);
  });

  it('a client that gives up while models download: nothing relayed, pins let go', async () => {
    const s = await setup();
    let open: () => void = () => undefined;
    s.models.gate = new Promise((r) => (open = r));
    await rawRequest(`${s.gate}/prompt`, { method: 'POST', body: API_PROMPT(), timeoutMs: 300 }).catch(() => undefined);
    open();
    await waitFor('the holder to go', () => [...s.models.holders.values()].every((h) => h.released) && s.models.holders.size === 1);
    expect(await promptsSeen(s.comfy)).toEqual([]);
  });

  it('a prompt with no models is relayed byte for byte, ComfyUI\'s own errors too', async () => {
    const s = await setup();
    const body = '{ "prompt" : { "1": {"class_type": "LoraLoader", "inputs": {"lora_name": "missing.safetensors"}}} , "number": 1e2 }';
    const r = await postPrompt(s.gate, body);
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ error: { type: 'prompt_outputs_failed_validation' } });
    expect(await promptsSeen(s.comfy)).toEqual([body]);
    expect(s.models.asked).toEqual([]);
  });
});
