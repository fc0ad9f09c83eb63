import { readdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { errnoCode } from '../errors.js';

/** Signal a whole process group; false when it no longer exists. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ESRCH') return false;
    throw e;
  }
}

/**
 * Does any live process remain in the group? kill(-pgid, 0) also succeeds for zombies, which an
 * init reaps in its own time (some lazily), so on Linux /proc decides: a zombie is gone already.
 */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return true;
  }
  for (const pid of pids) {
    const st = procStat(Number(pid));
    if (st && st.pgrp === pgid && st.state !== 'Z' && st.state !== 'X') return true;
  }
  return false;
}

/** Is this pid a live process (not gone, not a zombie)? */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
  const st = procStat(pid);
  return st === undefined || (st.state !== 'Z' && st.state !== 'X');
}

function procStat(pid: number): { state: string; pgrp: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: f[0] ?? '', pgrp: Number(f[2]) };
  } catch {
    return undefined;
  }
}

/** The shell's convention for a death by signal: 128 + its number. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal === null ? undefined : constants.signals[signal];
  return 128 + (n ?? 0);
}
