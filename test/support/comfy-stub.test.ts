import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { rawRequest } from './http-get.js';

const STUB = fileURLToPath(new URL('./comfy-stub.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'comfy-stub-'));
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) {
    try {
      if (c.pid !== undefined) process.kill(-c.pid, 'SIGKILL');
    } catch {
      // The whole group is already gone.
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Starts the stub in its own process group and resolves with the URL it prints. */
function startStub(args: string[]): Promise<{ child: ChildProcess; url: string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [STUB, '--listen', '127.0.0.1', '--port', '0', '--disable-auto-launch', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  children.push(child);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /To see the GUI go to: (http:\/\/\S+)/.exec(out);
      if (m?.[1]) resolve({ child, url: m[1], exited });
    });
    void exited.then((code) => reject(new Error(`stub exited ${code} before listening`)));
  });
}

describe('comfy stub', () => {
  it('answers like ComfyUI, lists models, records itself and exits 0 on SIGTERM', async () => {
    const models = join(dir, 'models');
    mkdirSync(join(models, 'checkpoints', 'sd'), { recursive: true });
    writeFileSync(join(models, 'checkpoints', 'sd', 'a.safetensors'), 'x');
    writeFileSync(join(models, 'checkpoints', 'b.safetensors.partial'), 'x');
    const record = join(dir, 'record.json');
    const { child, url, exited } = await startStub(['--stub-models-dir', models, '--stub-record', record, '--stub-spawn-grandchild']);

    const stats = JSON.parse((await rawRequest(`${url}/system_stats`)).body.toString()) as { system: { comfyui_version: string } };
    expect(stats.system.comfyui_version).toMatch(/stub/);
    const info = JSON.parse((await rawRequest(`${url}/object_info`)).body.toString()) as Record<string, { input: { required: Record<string, unknown> } }>;
    expect(info['CheckpointLoaderSimple']?.input.required['ckpt_name']).toEqual([['sd/a.safetensors']]);
    const prompt = await rawRequest(`${url}/prompt`, { method: 'POST', body: JSON.stringify({ prompt: {} }) });
    expect(JSON.parse(prompt.body.toString())).toMatchObject({ number: 0, node_errors: {} });

    const rec = JSON.parse(readFileSync(record, 'utf8')) as { pid: number; pgid: number | null; grandchildPid: number | null };
    expect(rec.pid).toBe(child.pid);
    expect(rec.pgid).toBe(child.pid);
    expect(rec.grandchildPid).toBeGreaterThan(0);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    // The grandchild outlives the stub on purpose: reaping the group is the supervisor's job.
    expect(() => process.kill(rec.grandchildPid ?? 0, 0)).not.toThrow();
  });

  it('validates, queues and runs prompts like ComfyUI, announcing them on the websocket', async () => {
    const models = join(dir, 'models-prompts');
    mkdirSync(join(models, 'loras'), { recursive: true });
    writeFileSync(join(models, 'loras', 'here.safetensors'), 'x');
    const { child, url, exited } = await startStub(['--stub-models-dir', models]);
    const post = async (body: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
      const r = await rawRequest(`${url}/api/prompt`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
      return { status: r.status, json: JSON.parse(r.body.toString()) as Record<string, unknown> };
    };
    const missing = await post({ prompt: { '5': { class_type: 'LoraLoader', inputs: { lora_name: 'gone.safetensors' } } } });
    expect(missing.status).toBe(400);
    expect(missing.json).toMatchObject({
      error: { type: 'prompt_outputs_failed_validation' },
      node_errors: { '5': { class_type: 'LoraLoader', errors: [{ type: 'value_not_in_list', extra_info: { input_name: 'lora_name', received_value: 'gone.safetensors' } }] } },
    });

    const ws = new WebSocket(`${url.replace('http', 'ws')}/ws?clientId=tester`);
    const messages: { type: string; data: Record<string, unknown> }[] = [];
    const binary: Buffer[] = [];
    ws.on('message', (d: Buffer, isBinary: boolean) => {
      if (isBinary) binary.push(d);
      else messages.push(JSON.parse(d.toString()) as { type: string; data: Record<string, unknown> });
    });
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true } }));
    const until = async (pred: () => boolean): Promise<void> => {
      for (let i = 0; i < 400 && !pred(); i++) await new Promise((r) => setTimeout(r, 25));
      expect(pred()).toBe(true);
    };
    await until(() => messages.some((m) => m.type === 'feature_flags'));
    expect(messages[0]).toMatchObject({ type: 'status', data: { sid: 'tester' } });
    expect(messages.find((m) => m.type === 'feature_flags')?.data).not.toHaveProperty('server_side_model_downloads');

    const ok = await post({ client_id: 'tester', prompt_id: 'p-1', prompt: { '5': { class_type: 'LoraLoader', inputs: { lora_name: 'here.safetensors' } } } });
    expect(ok).toEqual({ status: 200, json: { prompt_id: 'p-1', number: 0, node_errors: {} } });
    await until(() => messages.some((m) => m.type === 'execution_success' && m.data.prompt_id === 'p-1'));
    expect(messages.some((m) => m.type === 'executing' && m.data.node === null && m.data.prompt_id === 'p-1')).toBe(true);
    expect(binary[0]?.readUInt32BE(0)).toBe(1);
    const history = JSON.parse((await rawRequest(`${url}/history/p-1`)).body.toString()) as Record<string, { status: { completed: boolean } }>;
    expect(history['p-1']?.status.completed).toBe(true);

    const held = await post({ prompt_id: 'p-2', prompt: {}, extra_data: { stub_hold: true } });
    expect(held.status).toBe(200);
    const queue = async (): Promise<{ queue_running: unknown[][] }> => JSON.parse((await rawRequest(`${url}/queue`)).body.toString()) as { queue_running: unknown[][] };
    let running: unknown;
    for (let i = 0; i < 400 && running !== 'p-2'; i++) running = (await queue()).queue_running[0]?.[1];
    expect(running).toBe('p-2');
    await rawRequest(`${url}/stub/release`, { method: 'POST', body: JSON.stringify({ prompt_id: 'p-2' }) });
    expect((await queue()).queue_running).toEqual([]);
    ws.close();
    child.kill('SIGTERM');
    await exited;
  });

  it('crashes with the requested code', async () => {
    const { exited } = await startStub(['--stub-crash-after-ms', '100', '--stub-exit-code', '3']);
    expect(await exited).toBe(3);
  });

  it('can ignore SIGTERM', async () => {
    const { child, exited } = await startStub(['--stub-ignore-sigterm']);
    child.kill('SIGTERM');
    const early = await Promise.race([exited, new Promise((r) => setTimeout(() => r('alive'), 200))]);
    expect(early).toBe('alive');
    child.kill('SIGKILL');
    await exited;
  });
});
