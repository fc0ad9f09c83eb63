import { Worker } from 'node:worker_threads';
import { memoryHeadroom } from '../os-limits.js';
import type { ContentKey } from '../content-key.js';
import type { ChunkMap } from './chunks.js';

/**
 * The hash thread's code, run with `eval`: it needs nothing but node:fs and node:crypto, and a
 * string works the same from dist/ and from the TypeScript sources the tests run. Each job reads
 * its partial file behind the frontier it is told of (from the page cache, just written) and
 * hashes it; jobs interleave a message at a time.
 */
const WORKER = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const buf = Buffer.allocUnsafe(1024 * 1024);
const jobs = new Map();
parentPort.on('message', (m) => {
  try {
    if (m.open) {
      const hash = crypto.createHash(m.open.algo === 'gitsha1' ? 'sha1' : 'sha256');
      if (m.open.algo === 'gitsha1') hash.update('blob ' + m.open.size + '\\0');
      jobs.set(m.id, { hash, size: m.open.size, fd: fs.openSync(m.open.file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW), frontier: 0 });
      return;
    }
    const j = jobs.get(m.id);
    if (!j) return;
    if (m.stop) {
      jobs.delete(m.id);
      fs.closeSync(j.fd);
      return;
    }
    while (j.frontier < m.limit) {
      const n = fs.readSync(j.fd, buf, 0, Math.min(buf.length, m.limit - j.frontier), j.frontier);
      if (n === 0) throw new Error('partial file shorter than its journal at ' + j.frontier);
      j.hash.update(buf.subarray(0, n));
      j.frontier += n;
    }
    if (j.frontier >= j.size) {
      jobs.delete(m.id);
      fs.closeSync(j.fd);
      parentPort.postMessage({ id: m.id, hex: j.hash.digest('hex') });
    }
  } catch (e) {
    const j = jobs.get(m.id);
    jobs.delete(m.id);
    if (j) try { fs.closeSync(j.fd); } catch {}
    parentPort.postMessage({ id: m.id, error: String((e && e.message) || e) });
  }
});
`;

interface Job {
  resolve(hex: string | undefined): void;
  reject(e: Error): void;
}

/**
 * One thread hashes for every large download of the process: sha256 runs at ~1.7 GB/s on one
 * core, as much CPU as receiving and writing the bytes together, and one thread is enough for
 * any link this tool meets while a thread per file would cost ~9 MiB of memory each. The thread
 * keeps the process alive only while a job is open.
 */
class HashThread {
  private worker: Worker | undefined;
  private readonly jobs = new Map<number, Job>();
  private nextId = 1;

  get started(): boolean {
    return this.worker !== undefined;
  }

  open(file: string, algo: ContentKey['algo'], size: number, job: Job): number {
    const id = this.nextId++;
    this.jobs.set(id, job);
    this.ensure().postMessage({ id, open: { file, algo, size } });
    this.worker?.ref();
    return id;
  }

  frontier(id: number, limit: number): void {
    if (this.jobs.has(id)) this.worker?.postMessage({ id, limit });
  }

  stop(id: number): void {
    const job = this.jobs.get(id);
    if (!job) return;
    this.worker?.postMessage({ id, stop: true });
    this.settle(id);
    job.resolve(undefined);
  }

  private settle(id: number): void {
    this.jobs.delete(id);
    if (this.jobs.size === 0) this.worker?.unref();
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(WORKER, { eval: true, resourceLimits: THREAD_LIMITS });
    w.on('message', (m: { id: number; hex?: string; error?: string }) => {
      const job = this.jobs.get(m.id);
      if (!job) return;
      this.settle(m.id);
      if (m.hex !== undefined) job.resolve(m.hex);
      else job.reject(new Error(m.error ?? 'hash thread failed'));
    });
    const crashed = (e: Error): void => {
      this.worker = undefined;
      for (const [id, job] of this.jobs) {
        this.jobs.delete(id);
        job.reject(e);
      }
    };
    w.on('error', crashed);
    w.on('exit', (code) => crashed(new Error(`hash thread exited (${code})`)));
    this.worker = w;
    return w;
  }
}

const thread = new HashThread();

/**
 * The thread's own V8 heap, sized for what it does (a 1 MiB read buffer outside the heap and a
 * hash state): by default each thread reserves ~840 MB of address space (its code range
 * most of all), with these ~210 MB.
 */
const THREAD_LIMITS = { codeRangeSizeMb: 8, maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4 };
/** Address space the thread needs, with room for the main thread to go on growing. */
const THREAD_HEADROOM = 1024 * 1024 * 1024;

let fits: boolean | undefined;

/**
 * Whether a hash thread may be started. Under a low `ulimit -v` (or `-d`) V8 cannot reserve a
 * new isolate's memory, and that is a fatal OOM of the whole process (SIGTRAP, nothing to
 * catch): decided before the first thread, from the limits and what is mapped already. When
 * it does not fit, large files are hashed on the main thread (PrefixHasher), a little slower.
 */
export function hashThreadFits(): boolean {
  fits ??= thread.started || memoryHeadroom() >= THREAD_HEADROOM;
  return fits;
}

/** PrefixHasher's work, done on the shared hash thread: the main thread only posts the frontier. */
export class ThreadHasher {
  private told = 0;
  private readonly id: number;
  private readonly done: Promise<string | undefined>;

  constructor(
    file: string,
    private readonly map: ChunkMap,
    algo: ContentKey['algo'],
  ) {
    let job: Job | undefined;
    this.done = new Promise((resolve, reject) => (job = { resolve, reject }));
    this.id = thread.open(file, algo, map.size, job as Job);
  }

  notify(): void {
    const limit = this.map.contiguousEnd();
    if (limit <= this.told) return;
    this.told = limit;
    thread.frontier(this.id, limit);
  }

  stop(): void {
    thread.stop(this.id);
  }

  /** Resolves with the hex digest once every byte is hashed; undefined if stopped first. */
  run(): Promise<string | undefined> {
    // A resume may start with the whole prefix on disk already.
    this.notify();
    return this.done;
  }
}
