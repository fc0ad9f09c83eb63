/**
 * `modelsync run` as a real process for the daemon tests: free ports, the control API, the
 * ComfyUI stub's record, and a cleanup that leaves no process behind even when a test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { processAlive } from '../../src/daemon/process-group.js';
import { BIN, REPO_ROOT } from './cli.js';
import { rawRequest } from './http-get.js';

export const STUB = path.join(REPO_ROOT, 'test', 'support', 'comfy-stub.mjs');

/** A port nobody listens on right now (listen on 0, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** What the stub wrote about itself (--stub-record). */
export interface StubRecord {
  argv: string[];
  env: Record<string, string>;
  pid: number;
  pgid: number | null;
  port: number | null;
  grandchildPid: number | null;
}

export async function readRecord(file: string): Promise<StubRecord | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as StubRecord;
  } catch {
    return undefined;
  }
}

/** Poll until `fn` gives something other than undefined/false (every 50 ms, up to `timeoutMs`). */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface RunningDaemon {
  readonly child: ChildProcess;
  readonly controlUrl: string;
  readonly exited: Promise<Exit>;
  stdout(): string;
  stderr(): string;
  /** GET on the control API; undefined while nothing answers. */
  get(p: string): Promise<{ status: number; body: string } | undefined>;
  /** JSON of GET /status. */
  status(): Promise<DaemonStatusDoc>;
  signal(sig: NodeJS.Signals): void;
}

export interface DaemonStatusDoc {
  ready: boolean;
  healthy: boolean;
  manifest: { error?: string };
  comfyui?: { phase: string; pid?: number; restarts: number; degraded: boolean };
  sync: { running?: unknown; last?: { ok: boolean; reason: string } };
  entries: { dest: string; state: string; verified: boolean; required: boolean; bytes: number; size?: number; error?: string }[];
}

const running = new Set<RunningDaemon>();
const recordFiles = new Set<string>();

/** Spawn `modelsync run ARGS` with this env. `records`: stub record files to reap in cleanup. */
export function startRun(args: readonly string[], env: Record<string, string>, controlPort: number, records: readonly string[] = []): RunningDaemon {
  const child = spawn(process.execPath, [BIN, 'run', '--control', `127.0.0.1:${controlPort}`, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<Exit>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  const controlUrl = `http://127.0.0.1:${controlPort}`;
  for (const r of records) recordFiles.add(r);
  const d: RunningDaemon = {
    child,
    controlUrl,
    exited,
    stdout: () => out,
    stderr: () => err,
    get: async (p) => {
      try {
        const r = await rawRequest(controlUrl + p, { timeoutMs: 5000 });
        return { status: r.status, body: r.body.toString() };
      } catch {
        return undefined;
      }
    },
    status: async () => {
      const r = await rawRequest(`${controlUrl}/status`, { timeoutMs: 5000 });
      return JSON.parse(r.body.toString()) as DaemonStatusDoc;
    },
    signal: (sig) => {
      child.kill(sig);
    },
  };
  running.add(d);
  void exited.then(() => running.delete(d));
  return d;
}

/** afterEach: SIGKILL whatever is left (daemons, stubs and their groups). */
export async function killAll(): Promise<void> {
  for (const d of running) d.child.kill('SIGKILL');
  await Promise.all([...running].map((d) => d.exited));
  for (const file of recordFiles) {
    const rec = await readRecord(file);
    for (const pid of [rec?.pid, rec?.grandchildPid]) {
      if (pid === undefined || pid === null || !processAlive(pid)) continue;
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
    }
  }
  recordFiles.clear();
}
