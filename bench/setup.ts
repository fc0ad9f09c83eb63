import { fork, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BlobFaults } from '../test/support/hub.js';
import { track } from './children.js';
import { processCpu } from './cpu-time.js';
import type { AddedFile, HubOp, HubStatsSnapshot } from './hub-server.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BENCH_TMP = path.join(REPO_ROOT, '.bench-tmp');

/** The Hub stand-in running in a child process (bench/hub-server.ts under tsx). */
export interface HubChild {
  readonly endpoint: string;
  readonly cdnOrigin: string;
  /** CPU seconds the stand-in has used so far: it shares the machine's cores with the tool measured. */
  cpuSeconds(): number;
  addModel(repo: string, file: string, payload: number, seed: number): Promise<AddedFile>;
  addMany(repo: string, dir: string, count: number, payload: number, seed: number): Promise<AddedFile[]>;
  setFaults(key: string, faults: BlobFaults): Promise<void>;
  clearFaults(): Promise<void>;
  /** Bytes the Hub and CDN handed to the kernel for this blob (sha256 for LFS files). */
  served(key: string): Promise<number>;
  stats(): Promise<HubStatsSnapshot>;
  /** "host METHOD path status" of every request since index `from`, for diagnosing a case. */
  requestLog(from: number): Promise<string[]>;
  resetStats(): Promise<void>;
  /** Milliseconds every Hub and CDN answer waits before its first byte (a real server's TTFB). */
  setTtfb(ms: number): Promise<void>;
  /** Date.now() of the first CDN answer since the last resetStats, or null. */
  firstCdnAt(): Promise<number | null>;
  close(): Promise<void>;
}

export async function startHubChild(): Promise<HubChild> {
  const child: ChildProcess = track(
    fork(path.join(REPO_ROOT, 'bench', 'hub-server.ts'), [], {
      cwd: REPO_ROOT,
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let next = 1;
  const ready = new Promise<{ endpoint: string; cdnOrigin: string }>((resolve, reject) => {
    child.on('message', (m: { ready?: { endpoint: string; cdnOrigin: string }; id?: number; result?: unknown; error?: string }) => {
      if (m.ready) return resolve(m.ready);
      const p = m.id === undefined ? undefined : pending.get(m.id);
      if (!p || m.id === undefined) return;
      pending.delete(m.id);
      if (m.error !== undefined) p.reject(new Error(`hub: ${m.error}`));
      else p.resolve(m.result);
    });
    child.once('exit', (code, sig) => {
      const e = new Error(`hub process exited (${code ?? sig})`);
      reject(e);
      for (const p of pending.values()) p.reject(e);
      pending.clear();
    });
  });
  const { endpoint, cdnOrigin } = await ready;
  const call = <T>(msg: HubOp): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ id, msg });
    });
  return {
    endpoint,
    cdnOrigin,
    cpuSeconds: () => (child.pid === undefined ? 0 : processCpu(child.pid)),
    addModel: (repo, file, payload, seed) => call({ op: 'addModel', repo, path: file, payload, seed }),
    addMany: (repo, dir, count, payload, seed) => call({ op: 'addMany', repo, dir, count, payload, seed }),
    setFaults: (key, faults) => call({ op: 'setFaults', key, faults }),
    clearFaults: () => call({ op: 'clearFaults' }),
    served: (key) => call({ op: 'served', key }),
    stats: () => call({ op: 'stats' }),
    requestLog: (from) => call({ op: 'requestLog', from }),
    resetStats: () => call({ op: 'resetStats' }),
    setTtfb: (ms) => call({ op: 'setTtfb', ms }),
    firstCdnAt: () => call({ op: 'firstCdnAt' }),
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

const made = new Set<string>();

/**
 * Whatever work dirs are left when the bench exits (a case broke, Ctrl-C) are removed then,
 * unless they are to be kept for a look.
 */
export function removeLeftoversAtExit(keep: boolean): void {
  process.once('exit', () => {
    if (keep) return;
    for (const d of made) rmSync(d, { recursive: true, force: true });
  });
}

/** A fresh work dir under .bench-tmp/ (git-ignored); removed by the caller unless --keep. */
export async function workDir(label: string): Promise<string> {
  await mkdir(BENCH_TMP, { recursive: true });
  const dir = await mkdtemp(path.join(BENCH_TMP, `${label}-`));
  made.add(dir);
  return dir;
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  made.delete(dir);
}
