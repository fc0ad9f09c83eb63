import { readFileSync } from 'node:fs';

/** Linux reports utime/stime in clock ticks of USER_HZ, which is 100 on every Linux ABI node runs on. */
const TICKS_PER_SECOND = 100;

/** Fields 14-17 of /proc/<pid>/stat (utime, stime, cutime, cstime), in ticks. */
function statTimes(pid: number | 'self'): number[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    return [11, 12, 13, 14].map((i) => Number(rest[i] ?? 0));
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds of every child this process has waited for so far (their descendants included).
 * The difference across one child's life is that child's CPU time: the bench runs one measured
 * tool at a time, and the long-lived Hub child is never reaped while measuring.
 */
export function reapedChildrenCpu(): number {
  const t = statTimes('self');
  return t ? ((t[2] ?? 0) + (t[3] ?? 0)) / TICKS_PER_SECOND : 0;
}

/** CPU seconds a live process has used (user + system, all its threads). */
export function processCpu(pid: number): number {
  const t = statTimes(pid);
  return t ? ((t[0] ?? 0) + (t[1] ?? 0)) / TICKS_PER_SECOND : 0;
}
