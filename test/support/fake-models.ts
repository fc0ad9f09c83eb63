import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ModelsyncError } from '../../src/errors.js';
import type { FrontendModels, GateHolder, GateJob, GateJobSnapshot, GateModelEvent, GateModelOutcome } from '../../src/gate/models-port.js';

/**
 * The on-demand service as the gate sees it (src/gate/models-port.ts), played in memory for the
 * gate's own tests: it "publishes" by writing the file into the sandbox's models dir, refuses or
 * fails what a test says, and reports progress as the real one does (queued, downloading,
 * ready). The real service and the gate together: gate-ondemand.test.ts.
 */

interface Asked {
  readonly requests: readonly Record<string, unknown>[];
  readonly holder: string | undefined;
}

/** Publishes by writing the file; refuses or fails what the test says. */
export class FakeModels implements FrontendModels {
  readonly asked: Asked[] = [];
  readonly holders = new Map<string, { released: boolean }>();
  refuse: ((r: Record<string, unknown>) => string | undefined) | undefined;
  fail: ((r: Record<string, unknown>) => string | undefined) | undefined;
  elsewhere: string | undefined;
  gate: Promise<void> = Promise.resolve();
  /** Bytes "downloaded" per model: reported as one progress event halfway, then ready. */
  size = 7;
  private n = 0;
  private readonly listeners = new Set<(e: GateModelEvent) => void>();

  constructor(private readonly models: string) {}

  holder(): GateHolder {
    const id = `h${++this.n}`;
    const h = { released: false };
    this.holders.set(id, h);
    return { id, release: () => void (h.released = true) };
  }

  subscribe(listener: (e: GateModelEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** As the policy would: refused what `refuse` refuses. */
  allows(request: unknown): Promise<boolean> {
    return Promise.resolve(this.refuse?.(request as Record<string, unknown>) === undefined);
  }

  async submit(requests: readonly unknown[], opts?: { holder?: GateHolder | undefined }): Promise<GateJob> {
    const rs = requests as Record<string, unknown>[];
    this.asked.push({ requests: rs, holder: opts?.holder?.id });
    rs.forEach((r, i) => {
      // As the real service does (the manifest's dest rules): nothing outside the models dir.
      if (destOf(r).split('/').includes('..')) throw new ModelsyncError('E_MANIFEST', 'dest contains ".."', { entry: i, dest: destOf(r) });
      const why = this.refuse?.(r);
      if (why !== undefined) throw new ModelsyncError('E_POLICY', why, { entry: i, dest: destOf(r) });
    });
    const job = `j${this.asked.length}`;
    const queued: GateModelOutcome[] = rs.map((r) => ({ dest: destOf(r), state: 'queued', bytes: 0, total: undefined, speed: 0 }));
    const emit = (type: string, model: GateModelOutcome): void => {
      for (const l of this.listeners) l({ type, job, model });
    };
    for (const q of queued) emit('queued', q);
    const settled = (async (): Promise<GateJobSnapshot> => {
      await this.gate;
      // A download starts after the caller has its job, as over a network.
      await new Promise((r) => setImmediate(r));
      const models: GateModelOutcome[] = [];
      for (const r of rs) {
        const dest = this.elsewhere ?? destOf(r);
        const failed = this.fail?.(r);
        if (failed !== undefined) {
          const m = { dest, state: 'failed', bytes: 0, total: undefined, speed: 0, error: { code: 'E_HASH_MISMATCH', message: failed } };
          emit('failed', m);
          models.push(m);
          continue;
        }
        emit('downloading', { dest, state: 'downloading', bytes: 0, total: this.size, speed: 0 });
        emit('progress', { dest, state: 'downloading', bytes: Math.floor(this.size / 2), total: this.size, speed: 1000 });
        await mkdir(path.dirname(path.join(this.models, dest)), { recursive: true });
        await writeFile(path.join(this.models, dest), Buffer.alloc(this.size, 1));
        const m = { dest, state: 'ready', bytes: this.size, total: this.size, speed: 0 };
        emit('ready', m);
        models.push(m);
      }
      return { ok: models.every((m) => m.state === 'ready'), models };
    })();
    return { id: job, snapshot: () => ({ ok: false, models: queued }), settled };
  }
}

function destOf(r: Record<string, unknown>): string {
  if (typeof r.dest === 'string') return r.dest;
  return `${String(r.directory)}/${String(r.name)}`;
}

