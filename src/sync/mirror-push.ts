import { stat } from 'node:fs/promises';
import path from 'node:path';
import PQueue from 'p-queue';
import { keyName, type ContentKey } from '../content-key.js';
import { ModelsyncError } from '../errors.js';
import type { S3MirrorRef } from '../manifest/mirror-uri.js';
import type { Entry, Manifest } from '../manifest/types.js';
import { blobPath } from '../store/layout.js';
import type { SyncContext } from './context.js';
import { runSync } from './engine.js';
import { placeForSync, unplacedLabel } from './place.js';
import { buildPlan } from './plan.js';
import type { SyncEvents } from './types.js';

export type PushOutcome = 'uploaded' | 'present' | 'failed' | 'skipped';

export interface PushedBlob {
  /** sha256-<hex>, or the entry's source when it never resolved. */
  readonly key: string;
  readonly dests: readonly string[];
  readonly size: number | undefined;
  readonly outcome: PushOutcome;
  readonly error?: { readonly code: string; readonly message: string } | undefined;
}

export interface PushReport {
  readonly ok: boolean;
  readonly to: string;
  readonly blobs: readonly PushedBlob[];
  readonly uploaded: number;
  readonly present: number;
  readonly failed: number;
  readonly skipped: number;
  /** Bytes uploaded. */
  readonly bytes: number;
}

interface Blob {
  readonly key: ContentKey;
  readonly entries: Entry[];
  size: number | undefined;
}

/**
 * `modelsync mirror push`: every blob of the manifest onto an S3 mirror. What the mirror has
 * (HeadObject) is skipped; the rest is uploaded from the local store when it is there and
 * verified, else fetched (verified, into the store and the models dir, as a sync does) first.
 * The target is never read from while fetching: what it lacks is uploaded here, once.
 */
export async function pushToMirror(ctx: SyncContext, written: Manifest, to: S3MirrorRef, signal: AbortSignal, events: SyncEvents = {}): Promise<PushReport> {
  const manifest: Manifest = { ...written, mirrors: (written.mirrors ?? []).filter((m) => m.uri !== to.uri), mirrorWrite: undefined };
  const placement = await placeForSync(ctx, manifest, signal);
  const placed = placement.manifest;
  const plan = await buildPlan(ctx, placed, placed.entries, signal);
  const out: PushedBlob[] = [];
  const fail = (label: string, dests: readonly string[], size: number | undefined, e: unknown): void => {
    const me = e instanceof ModelsyncError ? e : new ModelsyncError('E_SYNC_FAILED', String(e), { cause: e });
    out.push({ key: label, dests, size, outcome: 'failed', error: { code: me.code, message: me.message } });
  };
  for (const f of plan.failed) fail(f.entry.source.uri, [f.entry.dest], f.entry.size, f.error);
  for (const f of placement.failed) fail(f.entry.source.uri, [unplacedLabel(f.entry)], f.entry.size, f.error);
  const blobs = new Map<string, Blob>();
  const add = (key: ContentKey, e: Entry, size: number | undefined): void => {
    const b = blobs.get(keyName(key));
    if (b) {
      b.entries.push(e);
      b.size ??= size;
    } else blobs.set(keyName(key), { key, entries: [e], size });
  };
  for (const p of plan.present) add(p.key, p.entry, p.size);
  for (const j of plan.jobs) for (const e of j.entries) add(j.key, e, j.file.size);
  const { S3Source } = await import('../sources/s3.js');
  const s3 = new S3Source({ config: ctx.config, manifest, idleTimeoutMs: ctx.config.tunables.idleTimeoutMs, connections: ctx.connections });
  const missing: Blob[] = [];
  const heads = new PQueue({ concurrency: ctx.connections.lookups });
  await Promise.all(
    [...blobs.values()].map((b) =>
      heads.add(async () => {
        const dests = b.entries.map((e) => e.dest);
        // A small non-LFS Hub file is keyed by its git sha1: mirrors hold sha256 names only.
        if (b.key.algo !== 'sha256') return void out.push({ key: keyName(b.key), dests, size: b.size, outcome: 'skipped' });
        try {
          if (await s3.mirrorHas(to, b.key, b.size, signal)) out.push({ key: keyName(b.key), dests, size: b.size, outcome: 'present' });
          else missing.push(b);
        } catch (e) {
          fail(keyName(b.key), dests, b.size, e);
        }
      }),
    ),
  );
  // Fetch what the store lacks (or holds unverified), as a sync of just those entries.
  const wanted = new Set(missing.flatMap((b) => b.entries.map((e) => e.index)));
  const synced = wanted.size === 0 ? undefined : await runSync(ctx, manifest, { signal, events, filter: (e) => wanted.has(e.index) });
  let bytes = 0;
  for (const b of missing) {
    const dests = b.entries.map((e) => e.dest);
    const results = synced?.entries.filter((r) => b.entries.some((e) => e.index === r.index)) ?? [];
    const good = results.find((r) => r.state !== 'failed');
    if (!good) {
      const why = results.find((r) => r.error)?.error;
      out.push({ key: keyName(b.key), dests, size: b.size, outcome: 'failed', error: why ?? { code: 'E_SYNC_FAILED', message: 'not fetched' } });
      continue;
    }
    try {
      const file = await localCopy(ctx, b.key, good.dest);
      const size = (await stat(file)).size;
      const outcome = await ctx.connections.request(() => s3.uploadBlob({ mirror: to, key: b.key, file, size, signal }), { host: `mirror-write:${to.bucket}`, signal });
      if (outcome === 'uploaded') bytes += size;
      ctx.log.info({ mirror: to.uri, key: keyName(b.key), bytes: size, outcome }, outcome === 'uploaded' ? 'uploaded to the mirror' : 'already on the mirror');
      out.push({ key: keyName(b.key), dests, size, outcome });
    } catch (e) {
      if (signal.aborted) throw e;
      fail(keyName(b.key), dests, b.size, e);
    }
  }
  out.sort((a, b) => a.key.localeCompare(b.key));
  const count = (o: PushOutcome): number => out.filter((b) => b.outcome === o).length;
  return { ok: count('failed') === 0, to: to.uri, blobs: out, uploaded: count('uploaded'), present: count('present'), failed: count('failed'), skipped: count('skipped'), bytes };
}

/** The verified bytes: the store blob, or (published by copy where links fail) the dest itself. */
async function localCopy(ctx: SyncContext, key: ContentKey, dest: string): Promise<string> {
  const blob = blobPath(ctx.store, key);
  try {
    await stat(blob);
    return blob;
  } catch {
    return path.join(ctx.config.modelsDir, dest);
  }
}
