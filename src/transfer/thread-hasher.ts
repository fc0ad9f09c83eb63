import { Worker } from 'node:worker_threads';
import type { ContentKey } from '../sources/source.js';
import type { ChunkMap } from './chunks.js';

/**
 * The worker's code, as a string run with `eval`: it needs nothing but node:fs and node:crypto,
 * and a string works the same from dist/ and from the TypeScript sources the tests run.
 * It reads the partial file behind the frontier it is told of (from the page cache, just
 * written) and hashes it; synchronous reads are right in a thread of its own.
 */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { file, algo, size } = workerData;
const hash = crypto.createHash(algo === 'gitsha1' ? 'sha1' : 'sha256');
if (algo === 'gitsha1') hash.update('blob ' + size + '\\0');
const buf = Buffer.allocUnsafe(1024 * 1024);
const fd = fs.openSync(file, 'r');
let frontier = 0;
parentPort.on('message', (limit) => {
  try {
    while (frontier < limit) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, limit - frontier), frontier);
      if (n === 0) throw new Error('partial file shorter than its journal at ' + frontier);
      hash.update(buf.subarray(0, n));
      frontier += n;
    }
    if (frontier >= size) parentPort.postMessage({ hex: hash.digest('hex') });
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message || e) });
  }
});
`;

/**
 * PrefixHasher's work on a thread of its own: sha256 runs at ~1.7 GB/s on one core, which on a
 * fast link is as much CPU as receiving and writing the bytes together. The main thread only
 * posts the contiguous frontier; the thread reads behind it and hashes.
 */
export class ThreadHasher {
  private readonly worker: Worker;
  private told = 0;
  private readonly done: Promise<string | undefined>;

  constructor(
    file: string,
    private readonly map: ChunkMap,
    algo: ContentKey['algo'],
  ) {
    this.worker = new Worker(WORKER, { eval: true, workerData: { file, algo, size: map.size } });
    this.done = new Promise((resolve, reject) => {
      this.worker.on('message', (m: { hex?: string; error?: string }) => {
        if (m.hex !== undefined) resolve(m.hex);
        else reject(new Error(m.error ?? 'hash thread failed'));
        void this.worker.terminate();
      });
      this.worker.on('error', reject);
      this.worker.on('exit', () => resolve(undefined));
    });
  }

  notify(): void {
    const limit = this.map.contiguousEnd();
    if (limit <= this.told) return;
    this.told = limit;
    this.worker.postMessage(limit);
  }

  stop(): void {
    void this.worker.terminate();
  }

  /** Resolves with the hex digest once every byte is hashed; undefined if stopped first. */
  run(): Promise<string | undefined> {
    // A resume may start with the whole prefix on disk already.
    this.notify();
    return this.done;
  }
}
