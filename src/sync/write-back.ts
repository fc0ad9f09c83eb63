import { stat } from 'node:fs/promises';
import PQueue from 'p-queue';
import { keyName, type ContentKey } from '../content-key.js';
import type { Config } from '../config.js';
import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Manifest } from '../manifest/types.js';
import type { S3Source } from '../sources/s3.js';
import { blobPath, type StoreLayout } from '../store/layout.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import type { SyncEvents } from './types.js';

export interface WriteBackStats {
  uploaded: number;
  /** Already on the mirror (HeadObject found it): nothing sent. */
  present: number;
  failed: number;
  /** Bytes uploaded. */
  bytes: number;
}

export type WriteBackOutcome = 'uploaded' | 'present' | 'failed';

interface Done {
  readonly outcome: WriteBackOutcome;
  readonly bytes: number;
}

/**
 * `mirror_write:`: blobs this process fetched from an origin, uploaded to the mirror once they
 * are published, in the background. One upload at a time, holding one connection of the budget
 * (so downloads keep the rest, and any download waiting for one goes first), read from the committed store blob (verified, read-only). A
 * failure is a warning and a count, never a failed sync: the mirror is an optimisation.
 */
export class WriteBack {
  readonly stats: WriteBackStats = { uploaded: 0, present: 0, failed: 0, bytes: 0 };
  private readonly queue = new PQueue({ concurrency: 1 });
  private readonly queued = new Set<string>();
  private readonly clients = new Map<string, Promise<S3Source>>();
  private readonly stop = new AbortController();

  constructor(private readonly opts: { config: Config; log: Logger; store: StoreLayout; connections: ConnectionBudget }) {}

  /** Queue the blob for the manifest's mirror_write, if it has one; returns at once. */
  schedule(manifest: Manifest, key: ContentKey, events: SyncEvents = {}): void {
    const to = manifest.mirrorWrite;
    if (to === undefined || key.algo !== 'sha256') return;
    const id = `${to.uri}\0${keyName(key)}`;
    if (this.queued.has(id)) return;
    this.queued.add(id);
    void this.queue.add(async () => {
      let done: Done = { outcome: 'failed', bytes: 0 };
      try {
        // Last in line: every download waiting for a connection goes first.
        await this.opts.connections.request(
          async () => {
            done = await this.upload(manifest, key);
          },
          { host: `mirror-write:${to.bucket}`, priority: Number.MAX_SAFE_INTEGER, signal: this.stop.signal },
        );
      } catch {
        /* aborted while waiting for a connection: the process is going down */
      } finally {
        this.queued.delete(id);
      }
      events.mirrorWrite?.(done.outcome, done.bytes);
    });
  }

  /** Resolves once every queued upload has finished (or failed). */
  drain(): Promise<void> {
    return this.queue.onIdle();
  }

  /** Abort the upload in flight and drop the queue (the process is going down). */
  close(): void {
    this.queue.clear();
    this.stop.abort();
  }

  private async upload(manifest: Manifest, key: ContentKey): Promise<Done> {
    const to = manifest.mirrorWrite;
    if (to === undefined) return { outcome: 'present', bytes: 0 };
    const file = blobPath(this.opts.store, key);
    const uri = `${to.uri}sha256/${key.hex}`;
    try {
      const size = (await stat(file)).size;
      const s3 = await this.client(manifest);
      const outcome = await s3.uploadBlob({ mirror: to, key, file, size, signal: this.stop.signal });
      this.opts.log.info({ mirror: to.uri, uri, bytes: size, outcome }, outcome === 'uploaded' ? 'uploaded to the mirror' : 'already on the mirror');
      return this.count({ outcome, bytes: outcome === 'uploaded' ? size : 0 });
    } catch (e) {
      if (!this.stop.signal.aborted) {
        const code = e instanceof ModelsyncError ? e.code : undefined;
        this.opts.log.warn({ mirror: to.uri, uri, code, err: e instanceof Error ? e.message : String(e) }, 'mirror write-back failed (the sync is unaffected)');
      }
      return this.count({ outcome: 'failed', bytes: 0 });
    }
  }

  private count(d: Done): Done {
    this.stats[d.outcome]++;
    this.stats.bytes += d.bytes;
    return d;
  }

  private client(manifest: Manifest): Promise<S3Source> {
    const k = JSON.stringify([manifest.path, manifest.s3]);
    let c = this.clients.get(k);
    if (!c) {
      c = import('../sources/s3.js').then(({ S3Source }) => new S3Source({ config: this.opts.config, manifest, idleTimeoutMs: this.opts.config.tunables.idleTimeoutMs, connections: this.opts.connections }));
      this.clients.set(k, c);
    }
    return c;
  }
}
