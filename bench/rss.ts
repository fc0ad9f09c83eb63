import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { track } from './children.js';
import { reapedChildrenCpu } from './cpu-time.js';
import { REPO_ROOT } from './setup.js';

/**
 * How peak RSS and bytes read are measured (there is no /usr/bin/time here):
 * - every child: /proc/<pid>/status VmHWM (the kernel's own RSS high-water mark, so polling only
 *   has to see it once before exit) and /proc/<pid>/io rchar/read_bytes, polled every POLL_MS;
 * - node children additionally preload bench/child-report.mjs, which writes
 *   process.resourceUsage().maxRSS and its final /proc/self/io to fd 3 from the 'exit' event, so
 *   the tail after the last poll is not lost. The larger of the two readings is reported.
 */
export interface Measured {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly wallMs: number;
  /** User + system CPU seconds of the child and its descendants. */
  readonly cpuSeconds: number;
  readonly peakRssBytes: number;
  /** Bytes returned by read()-family calls (all files, sockets and pipes included). */
  readonly rchar: number;
  /** Bytes the process caused to be fetched from the block device. */
  readonly readBytes: number;
  /** How the numbers were obtained, for the report. */
  readonly how: 'exit-report' | 'poll';
  readonly stdout: string;
  readonly stderr: string;
}

export interface SpawnOptions {
  readonly env: Record<string, string>;
  readonly cwd?: string;
  /** Called on every poll; kill the child from here to stop it midway (case 5). */
  readonly onPoll?: (pid: number, kill: () => void) => void | Promise<void>;
  readonly timeoutMs?: number;
}

const POLL_MS = 20;
const REPORTER = pathToFileURL(path.join(REPO_ROOT, 'bench', 'child-report.mjs')).href;

interface ProcSample {
  hwm: number;
  rchar: number;
  readBytes: number;
}

async function sample(pid: number): Promise<ProcSample | undefined> {
  try {
    const [status, io] = await Promise.all([readFile(`/proc/${pid}/status`, 'utf8'), readFile(`/proc/${pid}/io`, 'utf8')]);
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(status);
    // A zombie has no VmHWM line: nothing to learn from it.
    if (!kb?.[1]) return undefined;
    return { hwm: Number(kb[1]) * 1024, rchar: field(io, 'rchar'), readBytes: field(io, 'read_bytes') };
  } catch {
    return undefined;
  }
}

function field(text: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text);
  return m?.[1] ? Number(m[1]) : 0;
}

/** Run a node script with the exit reporter preloaded. */
export function spawnNode(script: string, args: readonly string[], opts: SpawnOptions): Promise<Measured> {
  return spawnMeasured(process.execPath, ['--import', REPORTER, script, ...args], opts, true);
}

export function spawnMeasured(cmd: string, args: readonly string[], opts: SpawnOptions, reports = false): Promise<Measured> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const cpuBefore = reapedChildrenCpu();
    const child = track(spawn(cmd, args, { env: opts.env, cwd: opts.cwd ?? REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe', reports ? 'pipe' : 'ignore'] }));
    const pid = child.pid;
    let stdout = '';
    let stderr = '';
    let report = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-64 * 1024)));
    child.stdio[3]?.on('data', (d: Buffer) => (report += d.toString()));
    const best: ProcSample = { hwm: 0, rchar: 0, readBytes: 0 };
    let exited = false;
    const kill = (): void => void child.kill('SIGKILL');
    // Nothing the bench runs should take this long; a hung child must not hang the bench.
    const timer = setTimeout(kill, opts.timeoutMs ?? 30 * 60_000);
    const poll = async (): Promise<void> => {
      while (!exited && pid !== undefined) {
        const s = await sample(pid);
        if (s && !exited) {
          best.hwm = Math.max(best.hwm, s.hwm);
          best.rchar = Math.max(best.rchar, s.rchar);
          best.readBytes = Math.max(best.readBytes, s.readBytes);
        }
        if (opts.onPoll && pid !== undefined && !exited) await opts.onPoll(pid, kill);
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    };
    const polling = poll();
    child.once('error', (e) => {
      exited = true;
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      const wallMs = performance.now() - started;
      // 'close' comes after the child was reaped, so its times are in our children's totals now.
      const cpuSeconds = reapedChildrenCpu() - cpuBefore;
      exited = true;
      clearTimeout(timer);
      void polling.then(() => {
        let how: Measured['how'] = 'poll';
        if (report.trim()) {
          try {
            const r = JSON.parse(report) as { maxRssKb: number; rchar: number; readBytes: number };
            best.hwm = Math.max(best.hwm, r.maxRssKb * 1024);
            best.rchar = Math.max(best.rchar, r.rchar);
            best.readBytes = Math.max(best.readBytes, r.readBytes);
            how = 'exit-report';
          } catch {
            /* killed mid-write: the polled values stand */
          }
        }
        resolve({ code, signal, wallMs, cpuSeconds, peakRssBytes: best.hwm, rchar: best.rchar, readBytes: best.readBytes, how, stdout, stderr });
      });
    });
  });
}
