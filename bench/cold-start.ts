/**
 * Cold start on a warm volume: how much time `modelsync run -- CMD` adds before CMD starts,
 * compared with spawning CMD directly. The volume holds a synced manifest of ENTRIES files; the
 * Hub stand-in is shut down before measuring, so a warm start that touched the network fails.
 *
 *   npm run build && npx tsx bench/cold-start.ts [--entries 200] [--runs 15]
 *
 * Measured from spawn() to the first output line of the ComfyUI stand-in (which prints at once),
 * seen directly or through modelsync's `[comfyui]` prefix. Medians of alternating runs.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeSafetensors, startHub } from '../test/support/hub.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'modelsync.js');
const STUB = path.join(ROOT, 'test', 'support', 'comfy-stub.mjs');

function flag(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : dflt;
  if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name} must be a positive integer`);
  return v;
}

const ENTRIES = flag('entries', 200);
const RUNS = flag('runs', 15);

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Spawn, resolve with ms until a line matching `marker` appears on stdout or stderr; then stop it. */
function timeToLine(cmd: string, args: readonly string[], env: Record<string, string>, marker: RegExp): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, [...args], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let seen = false;
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (seen || !marker.test(out)) return;
      seen = true;
      const ms = performance.now() - t0;
      // modelsync forwards SIGTERM to its child's group; the direct stub exits on it too.
      process.kill(-(child.pid as number), 'SIGTERM');
      child.once('close', () => resolve(ms));
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code) => {
      if (!seen) reject(new Error(`${path.basename(args[0] ?? cmd)} exited ${code} before starting the child:\n${out.slice(-2000)}`));
    });
  });
}

function runCli(args: readonly string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('close', (code) => resolve({ code, out }));
  });
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-cold-'));
try {
  const models = path.join(dir, 'models');
  await mkdir(models);
  const hub = await startHub();
  const files = Array.from({ length: ENTRIES }, (_, i) => ({ path: `w/${String(i).padStart(5, '0')}.safetensors`, content: makeSafetensors(2048, i + 1) }));
  hub.addRepo({ id: 'bench/cold', files });
  const manifest = path.join(dir, 'manifest.json');
  await writeFile(manifest, JSON.stringify({ version: 1, models: files.map((f) => ({ source: `hf://bench/cold/${f.path}`, dest: `checkpoints/cold/${path.basename(f.path)}` })) }));
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    MODELSYNC_MODELS_DIR: models,
    MODELSYNC_STATE_DIR: path.join(dir, 'state'),
    MODELSYNC_MANIFEST: manifest,
    MODELSYNC_LOG_LEVEL: 'warn',
    HF_ENDPOINT: hub.endpoint,
  };
  const synced = await runCli(['sync'], env);
  await hub.close();
  if (synced.code !== 0) throw new Error(`initial sync failed:\n${synced.out}`);

  const stubArgs = [STUB, '--listen', '127.0.0.1', '--port', '0'];
  const direct: number[] = [];
  const viaModelsync: number[] = [];
  // One of each first, not measured: page cache and V8 code cache warm-up.
  await timeToLine(process.execPath, stubArgs, env, /\n/);
  await timeToLine(process.execPath, [BIN, 'run', '--control', '127.0.0.1:0', '--', process.execPath, ...stubArgs], env, /\[comfyui\] .*\n/);
  for (let i = 0; i < RUNS; i++) {
    direct.push(await timeToLine(process.execPath, stubArgs, env, /\n/));
    viaModelsync.push(await timeToLine(process.execPath, [BIN, 'run', '--control', '127.0.0.1:0', '--', process.execPath, ...stubArgs], env, /\[comfyui\] .*\n/));
  }
  const d = median(direct);
  const m = median(viaModelsync);
  console.log(`cold start on a warm volume (${ENTRIES} entries, ${RUNS} runs, median)`);
  console.log(`  stub spawned directly:          ${d.toFixed(1)} ms to its first line`);
  console.log(`  modelsync run -- stub:          ${m.toFixed(1)} ms to the stub's first line`);
  console.log(`  added by modelsync:             ${(m - d).toFixed(1)} ms (target: well under 300 ms)`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
