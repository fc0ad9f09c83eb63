import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256Hex } from './hub.js';

/**
 * Real `modelsync` processes sharing one store, for the shared-volume tests, the stress script
 * and the benchmark. Each node gets its own state dir and models dir, as separate machines would.
 */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = path.join(REPO_ROOT, 'bin', 'modelsync.js');

export interface NodeDirs {
  readonly name: string;
  readonly stateDir: string;
  readonly modelsDir: string;
}

export interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunningNode {
  readonly dirs: NodeDirs;
  readonly child: ChildProcess;
  readonly done: Promise<Finished>;
  /** stderr so far (pino JSON lines). */
  stderr(): string;
}

export async function makeNode(root: string, name: string): Promise<NodeDirs> {
  const dirs = { name, stateDir: path.join(root, name, 'state'), modelsDir: path.join(root, name, 'models') };
  await mkdir(dirs.stateDir, { recursive: true });
  await mkdir(dirs.modelsDir, { recursive: true });
  return dirs;
}

/** A scrubbed environment: nothing from the machine's HOME or tokens leaks into the child. */
export function nodeEnv(dirs: NodeDirs, hubEndpoint: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dirs.stateDir,
    MODELSYNC_STATE_DIR: dirs.stateDir,
    XDG_CACHE_HOME: path.join(dirs.stateDir, 'cache'),
    HF_ENDPOINT: hubEndpoint,
    MODELSYNC_LOG_LEVEL: 'info',
    ...extra,
  };
}

/** `node [execArgv] bin/modelsync.js args`; execArgv is for test preloads (see fake-statfs.mjs). */
export function startNode(dirs: NodeDirs, args: readonly string[], env: Record<string, string>, execArgv: readonly string[] = []): RunningNode {
  const child = spawn(process.execPath, [...execArgv, BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  const done = new Promise<Finished>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err }));
  });
  return { dirs, child, done, stderr: () => err };
}

/** `modelsync sync` for one node against a shared store. */
export function startSync(dirs: NodeDirs, opts: { manifest: string; storeDir: string; hub: string; env?: Record<string, string>; args?: readonly string[] }): RunningNode {
  const args = ['sync', '--manifest', opts.manifest, '--models-dir', dirs.modelsDir, '--store-dir', opts.storeDir, '--state-dir', dirs.stateDir, ...(opts.args ?? [])];
  return startNode(dirs, args, nodeEnv(dirs, opts.hub, opts.env));
}

export async function writeManifest(file: string, models: readonly { source: string; dest: string }[]): Promise<string> {
  await writeFile(file, JSON.stringify({ version: 1, models }, null, 2));
  return file;
}

export async function fileSha256(file: string): Promise<string> {
  return sha256Hex(await readFile(file));
}

/** Files under a folder, recursively (relative paths); [] when it does not exist. */
export async function listFiles(dir: string): Promise<string[]> {
  let ents;
  try {
    ents = await readdir(dir, { withFileTypes: true, recursive: true });
  } catch {
    return [];
  }
  return ents.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `probe` until it returns a value, or fail after `timeoutMs` with `what`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}
