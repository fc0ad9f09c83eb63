import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { scrubSecrets } from '../redact.js';

/**
 * Before ComfyUI starts: is its port already taken? A ComfyUI left over from an earlier run (a
 * daemon killed before it had a guardian, a ComfyUI started by hand) would make ours crash-loop
 * on "Address already in use", and worse, answer our health probe in its place, so that the
 * new daemon reports ready for a process it does not supervise.
 */

export interface PortHolder {
  readonly pid: number;
  /** Its command line, as /proc shows it (scrubbed, shortened). */
  readonly command: string;
}

/** Does anything accept TCP connections at host:port now? */
export function accepting(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (v: boolean): void => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/**
 * The process listening on TCP `port`, found the way `ss -ltnp` does it (Linux /proc: the
 * socket's inode in /proc/net/tcp{,6}, then the process holding a descriptor to it). Undefined
 * elsewhere, or when that process is not ours to look into.
 */
export function findListener(port: number, secrets: readonly string[] = []): PortHolder | undefined {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; the inode is the 10th field.
      if (f[3] === '0A' && Number.parseInt(f[1]?.split(':')[1] ?? '', 16) === port && f[9] !== undefined) inodes.add(`socket:[${f[9]}]`);
    }
  }
  if (inodes.size === 0) return undefined;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (inodes.has(target)) return { pid: Number(pid), command: commandOf(pid, secrets) };
    }
  }
  return undefined;
}

function commandOf(pid: string, secrets: readonly string[]): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    const text = scrubSecrets(argv, secrets);
    return text.length > 160 ? `${text.slice(0, 160)}...` : text;
  } catch {
    return '?';
  }
}

export interface PortWait {
  readonly host: string;
  readonly port: number;
  /** A previous daemon's guardian gives its child the stop timeout: wait about that long. */
  readonly waitMs: number;
  readonly secrets: readonly string[];
  readonly log: Logger;
  readonly signal: AbortSignal;
}

/**
 * Resolves once nothing holds the port (at once, usually). A holder that is still there after
 * `waitMs` is an error naming it (E_CHILD): the child is not started.
 */
export async function waitForFreePort(w: PortWait): Promise<void> {
  if (!(await accepting(w.host, w.port))) return;
  const where = `${w.host.includes(':') ? `[${w.host}]` : w.host}:${w.port}`;
  const holder = findListener(w.port, w.secrets);
  const who = holder ? `pid ${holder.pid} (${holder.command})` : 'another process';
  w.log.warn({ port: w.port, holderPid: holder?.pid, waitMs: w.waitMs }, `ComfyUI's port ${where} is taken by ${who}; waiting for it to go`);
  const deadline = performance.now() + w.waitMs;
  while (performance.now() < deadline) {
    await sleep(200, undefined, { signal: w.signal }).catch(() => undefined);
    if (w.signal.aborted) return;
    if (!(await accepting(w.host, w.port))) return;
  }
  const still = findListener(w.port, w.secrets) ?? holder;
  const whoNow = still ? `pid ${still.pid} (${still.command})` : 'another process';
  throw new ModelsyncError(
    'E_CHILD',
    `not starting ComfyUI: its port ${where} is held by ${whoNow}, still after ${Math.round(w.waitMs / 1000)} s; a ComfyUI left over from an earlier run? Stop it${still ? ` (kill ${still.pid})` : ''} or give ComfyUI another --port`,
  );
}
