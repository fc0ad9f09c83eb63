import { readFileSync } from 'node:fs';

/**
 * This process's resource limits (`ulimit`), where the OS tells them (Linux: /proc/self/limits).
 * Node has no getrlimit: a limit it cannot read is taken as no limit, which is what it is on
 * every machine that lacks /proc's answer.
 */
export interface ProcessLimits {
  /** Soft RLIMIT_NOFILE: descriptors this process may hold at once. */
  readonly openFiles: number;
  /** Soft RLIMIT_AS, bytes of address space. */
  readonly addressSpace: number;
  /** Soft RLIMIT_DATA, bytes of data segment (private writable mappings, since Linux 4.7). */
  readonly dataSize: number;
}

const NAMES: Readonly<Record<keyof ProcessLimits, string>> = { openFiles: 'Max open files', addressSpace: 'Max address space', dataSize: 'Max data size' };

/** A /proc file's text; empty where there is no /proc (then every limit reads as none). */
function procText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Read once per call (limits can be changed by prlimit(1) from outside, rarely). */
export function processLimits(limitsText?: string): ProcessLimits {
  const text = limitsText ?? procText('/proc/self/limits');
  const soft = (name: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(name));
    const v = line?.slice(name.length).trim().split(/\s+/)[0];
    return v === undefined || v === 'unlimited' || !/^\d+$/.test(v) ? Infinity : Number(v);
  };
  return { openFiles: soft(NAMES.openFiles), addressSpace: soft(NAMES.addressSpace), dataSize: soft(NAMES.dataSize) };
}

/** Bytes this process uses now of what those limits count: VmSize (address space), VmData. */
export function memoryInUse(statusText?: string): { readonly addressSpace: number; readonly dataSize: number } {
  const text = statusText ?? procText('/proc/self/status');
  const kib = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { addressSpace: kib('VmSize'), dataSize: kib('VmData') };
}

/** Bytes of address space (and data segment) this process can still map before ENOMEM. */
export function memoryHeadroom(): number {
  const lim = processLimits();
  if (lim.addressSpace === Infinity && lim.dataSize === Infinity) return Infinity;
  const used = memoryInUse();
  return Math.min(lim.addressSpace - used.addressSpace, lim.dataSize - used.dataSize);
}

/** Below this many descriptors Node's module loader alone runs out (it opens a module's imports all at once). */
export const MIN_OPEN_FILES = 256;
/** Address space beyond what Node maps at start that a sync needs (measured: ~330 MiB at the edge). */
export const MIN_MEMORY_HEADROOM = 384 * 1024 * 1024;

/**
 * Limits too low for modelsync to run at all, refused up front in one line: past this point
 * they would end in EMFILE from inside Node's module loader, or in a fatal V8 out-of-memory
 * that no handler can catch. Undefined when the process may go on.
 */
export function limitsProblem(): string | undefined {
  const lim = processLimits();
  if (lim.openFiles < MIN_OPEN_FILES) {
    return `the open-file limit is ${lim.openFiles}; modelsync needs at least ${MIN_OPEN_FILES} (1024 or more recommended): raise it with \`ulimit -n\` (systemd: LimitNOFILE=, docker: --ulimit nofile=)`;
  }
  const used = memoryInUse();
  const MiB = 1024 * 1024;
  const room = { v: lim.addressSpace - used.addressSpace, d: lim.dataSize - used.dataSize };
  const tight = room.v <= room.d ? { flag: 'v', what: 'address-space', limit: lim.addressSpace, left: room.v, inUse: used.addressSpace } : { flag: 'd', what: 'data-segment', limit: lim.dataSize, left: room.d, inUse: used.dataSize };
  if (tight.left < MIN_MEMORY_HEADROOM) {
    const need = Math.ceil((tight.inUse + MIN_MEMORY_HEADROOM) / MiB);
    return `the ${tight.what} limit (\`ulimit -${tight.flag}\`) is ${Math.floor(tight.limit / MiB)} MiB, ${Math.max(0, Math.floor(tight.left / MiB))} MiB beyond what Node itself maps; modelsync needs ${MIN_MEMORY_HEADROOM / MiB} MiB more: raise it to ${need} MiB or more, or unlimited`;
  }
  return undefined;
}

/**
 * Connections that fit in the open-file limit: each holds a socket, and each file in flight a
 * partial, its journal and the hash thread's reader, about four descriptors per connection,
 * beside some 64 that Node, SQLite and the logger keep.
 */
export function connectionsThatFit(openFiles = processLimits().openFiles): number {
  return openFiles === Infinity ? Infinity : Math.max(1, Math.floor((openFiles - 64) / 4));
}
