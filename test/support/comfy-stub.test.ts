import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
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
