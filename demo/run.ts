/**
 * `npm run demo`: modelsync end to end, offline. A local Hugging Face Hub stand-in (CDN on
 * another loopback host, paced like a real one) serves a few generated models; `modelsync run`
 * syncs the required ones, starts a ComfyUI stand-in, reports ready, and keeps fetching the
 * optional one. Then a warm restart shows the cold-start difference.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeSafetensors, sha256Hex, startHub, type Hub } from '../test/support/hub.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MB = 1024 * 1024;

function say(text: string): void {
  process.stdout.write(`\x1b[1m==> ${text}\x1b[0m\n`);
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Three repos; like a real CDN each connection is capped, so parallel ranged connections matter. */
function addRepos(hub: Hub): Record<string, unknown>[] {
  const ckpt = makeSafetensors(96 * MB, 1);
  const vae = makeSafetensors(24 * MB, 2);
  const lora = makeSafetensors(64 * MB, 3);
  hub.addRepo({ id: 'demo/sdxl-tiny', files: [{ path: 'sd_xl_tiny.safetensors', content: ckpt }, { path: 'model_index.json', content: Buffer.from('{"_class_name": "demo"}\n'), lfs: false }] });
  hub.addRepo({ id: 'demo/vae-tiny', files: [{ path: 'vae.safetensors', content: vae }] });
  hub.addRepo({ id: 'demo/lora-pack', files: [{ path: 'style.safetensors', content: lora }] });
  hub.setFaults(sha256Hex(ckpt), { bytesPerSecond: 12 * MB });
  hub.setFaults(sha256Hex(vae), { bytesPerSecond: 12 * MB });
  hub.setFaults(sha256Hex(lora), { bytesPerSecond: 2 * MB });
  return [
    { source: 'hf://demo/sdxl-tiny/sd_xl_tiny.safetensors', dest: 'checkpoints/sd_xl_tiny.safetensors' },
    { source: 'hf://demo/sdxl-tiny/model_index.json', dest: 'configs/sd_xl_tiny.json' },
    { source: 'hf://demo/vae-tiny/vae.safetensors', dest: 'vae/vae.safetensors' },
    { source: 'hf://demo/vae-tiny/vae.safetensors', dest: 'vae/vae-copy.safetensors' },
    { source: 'hf://demo/lora-pack/style.safetensors', dest: 'loras/style.safetensors', required: false },
  ];
}

interface Running {
  child: ChildProcess;
  started: number;
  exited: Promise<number | null>;
}

function startModelsync(env: NodeJS.ProcessEnv, control: string, comfyPort: number): Running {
  const child = spawn(
    process.execPath,
    [path.join(ROOT, 'bin/modelsync.js'), 'run', '--control', control, '--', process.execPath, path.join(ROOT, 'test/support/comfy-stub.mjs'), '--listen', '127.0.0.1', '--port', String(comfyPort)],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // modelsync's own output: ComfyUI's lines (prefixed) on stdout, JSON logs on stderr; show a digest.
  lines(child.stdout, (l) => process.stdout.write(`   | ${l}\n`));
  lines(child.stderr, (l) => {
    const m = /"msg":"([^"]+)"/.exec(l);
    if (m && m[1] !== 'published') process.stdout.write(`   . ${m[1]}\n`);
  });
  return { child, started: performance.now(), exited: new Promise((r) => child.on('exit', (code) => r(code))) };
}

function lines(stream: NodeJS.ReadableStream | null, each: (line: string) => void): void {
  let rest = '';
  stream?.on('data', (d: Buffer) => {
    const parts = (rest + d.toString()).split('\n');
    rest = parts.pop() ?? '';
    for (const p of parts) if (p.trim() !== '') each(p);
  });
}

async function get(url: string): Promise<{ status: number; text: string }> {
  try {
    const res = await fetch(url);
    return { status: res.status, text: await res.text() };
  } catch {
    return { status: 0, text: '' };
  }
}

async function waitFor(pred: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-demo-'));
  const hub = await startHub();
  let run: Running | undefined;
  try {
    const models = path.join(dir, 'models');
    await mkdir(models, { recursive: true });
    const manifest = path.join(dir, 'manifest.yaml');
    const entries = addRepos(hub);
    await writeFile(manifest, `version: 1\nmodels:\n${entries.map((e) => `  - ${JSON.stringify(e)}`).join('\n')}\n`);
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: dir,
      HF_ENDPOINT: hub.endpoint,
      MODELSYNC_MANIFEST: manifest,
      MODELSYNC_MODELS_DIR: models,
      MODELSYNC_STATE_DIR: path.join(dir, 'state'),
      MODELSYNC_LOG_LEVEL: 'info',
    };
    const control = `127.0.0.1:${await freePort()}`;
    say(`manifest: ${entries.length} entries (one optional), Hub stand-in at ${hub.endpoint}, CDN at ${hub.cdnOrigin}`);
    say(`cold start: modelsync run --control ${control} -- <ComfyUI stand-in>`);
    run = startModelsync(env, control, await freePort());
    const readyCold = await waitFor(async () => (await get(`http://${control}/readyz`)).status === 200, 120_000);
    const coldMs = performance.now() - run.started;
    say(`ready after ${(coldMs / 1000).toFixed(2)} s (required models verified, ComfyUI answering): ${readyCold}`);
    const status = JSON.parse((await get(`http://${control}/status`)).text || '{}') as { entries?: { dest: string; state: string }[] };
    for (const e of status.entries ?? []) process.stdout.write(`   ${e.state.padEnd(12)} ${e.dest}\n`);
    say('the optional LoRA keeps downloading in the background; waiting for it');
    await waitFor(async () => /"state":\s*"(present|published)"[^}]*loras\/style|loras\/style[^}]*"state":\s*"(present|published)"/.test((await get(`http://${control}/status`)).text), 120_000);
    const metrics = (await get(`http://${control}/metrics`)).text.split('\n').filter((l) => /^modelsync_(cold_start_seconds|bytes_downloaded_total|entries_verified|cache_hits_total)/.test(l));
    for (const m of metrics) process.stdout.write(`   ${m}\n`);
    say('SIGTERM: modelsync stops ComfyUI and exits with its code');
    run.child.kill('SIGTERM');
    process.stdout.write(`   exit code ${String(await run.exited)}\n`);
    say('warm restart: everything is present and verified, so no request and no byte read');
    hub.resetStats();
    run = startModelsync(env, control, await freePort());
    await waitFor(async () => (await get(`http://${control}/readyz`)).status === 200, 60_000);
    const warmMs = performance.now() - run.started;
    say(`ready after ${(warmMs / 1000).toFixed(2)} s warm vs ${(coldMs / 1000).toFixed(2)} s cold; Hub/CDN requests during the warm start: ${hub.stats.requests.length}`);
    run.child.kill('SIGTERM');
    await run.exited;
    run = undefined;
  } finally {
    run?.child.kill('SIGKILL');
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
