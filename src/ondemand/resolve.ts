import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { keyName, type ContentKey } from '../content-key.js';
import { ModelsyncError } from '../errors.js';
import type { Entry, Manifest } from '../manifest/types.js';
import type { RemoteFile } from '../sources/source.js';
import { blobPath } from '../store/layout.js';
import type { SyncContext } from '../sync/context.js';
import { buildPlan } from '../sync/plan.js';
import { capable, probeSize, type DescribesS3, type HasFileFor } from '../sync/source-extras.js';
import type { BlobJob, SyncEvents } from '../sync/types.js';
import type { OnDemandLayer } from './layer.js';

export interface Resolved {
  /** Distinct blobs to fetch (or find in the store), each with every entry that wants it. */
  readonly jobs: readonly BlobJob[];
  /** Entries the manifest path finds in place already (a manifest's dest with this content). */
  readonly present: readonly Entry[];
  readonly failed: readonly { entry: Entry; error: ModelsyncError }[];
  /** Keys whose blob is in the store already: nothing to download. */
  readonly inStore: ReadonlySet<string>;
}

/**
 * What each entry resolves to, as the manifest path does (one Hub lookup per repo, dedupe by
 * content), with what on-demand requests add: a size for every blob (the layer's capacity is
 * checked before any byte moves), and for an https:// or s3:// request without a sha256 a download
 * that learns its key, unless the same source was learnt before (trust on first use: the first
 * download decides).
 */
export async function resolveForLayer(ctx: SyncContext, manifest: Manifest, entries: readonly Entry[], tofu: ReadonlySet<Entry>, layer: OnDemandLayer, signal: AbortSignal, events: SyncEvents): Promise<Resolved> {
  const known = entries.filter((e) => !tofu.has(e));
  const plan = known.length > 0 ? await buildPlan(ctx, { ...manifest, entries: known }, known, signal, events) : undefined;
  const failed = [...(plan?.failed ?? [])];
  const jobs: BlobJob[] = [];
  const inStore = new Set(plan?.inStore ?? []);
  for (const job of plan?.jobs ?? []) {
    try {
      jobs.push(await sized(ctx, manifest, job, signal));
    } catch (e) {
      for (const entry of job.entries) failed.push({ entry, error: asError(e).forEntry(entry.index, entry.dest) });
    }
  }
  const byUri = new Map<string, Entry[]>();
  for (const e of entries) if (tofu.has(e)) byUri.set(e.source.uri, [...(byUri.get(e.source.uri) ?? []), e]);
  for (const group of byUri.values()) {
    try {
      const job = await learning(ctx, manifest, group, layer, signal);
      if (!job.learn && (await exists(blobPath(ctx.store, job.key)))) inStore.add(keyName(job.key));
      jobs.push(job);
    } catch (e) {
      for (const entry of group) failed.push({ entry, error: asError(e).forEntry(entry.index, entry.dest) });
    }
  }
  return { jobs, present: (plan?.present ?? []).map((p) => p.entry), failed, inStore };
}

/** The job with its blob's size known: asked of the server when the source did not say it. */
async function sized(ctx: SyncContext, manifest: Manifest, job: BlobJob, signal: AbortSignal): Promise<BlobJob> {
  if (job.file.size !== undefined) return job;
  const first = job.entries[0] as Entry;
  const source = await ctx.sourceFor(first.source.kind, manifest);
  const size = await probeSize(ctx, source, job.file, signal);
  if (size === undefined) throw new ModelsyncError('E_POLICY', `${job.file.uri}: the server does not say how big it is, so on_demand.max_bytes cannot be checked; give its size in the request`, { url: job.file.uri });
  return { ...job, file: { ...job.file, size } };
}

/** A TOFU group (one source, maybe several dests): its learnt key if any, else a download that learns it. */
async function learning(ctx: SyncContext, manifest: Manifest, group: readonly Entry[], layer: OnDemandLayer, signal: AbortSignal): Promise<BlobJob> {
  const first = group[0] as Entry;
  const source = await ctx.sourceFor(first.source.kind, manifest);
  const before = layer.learnt(first.source.uri);
  if (before && (await exists(blobPath(ctx.store, before.key)))) {
    const file = first.source.kind === 's3' ? capable<DescribesS3>(source, 'describe').fileFor(await capable<DescribesS3>(source, 'describe').describe(first, signal), before.key) : fileFor(source, first, before.key);
    return { key: before.key, file: { ...file, size: before.size }, entries: group };
  }
  // Names the download (its partial) until its bytes say what they are; never a blob's name.
  const placeholder: ContentKey = { algo: 'sha256', hex: createHash('sha256').update(`modelsync-tofu\0${first.source.uri}`).digest('hex') };
  let file: RemoteFile;
  if (first.source.kind === 's3') {
    const s3 = capable<DescribesS3>(source, 'describe');
    const obj = await s3.describe(first, signal);
    if (first.size !== undefined && first.size !== obj.size) throw new ModelsyncError('E_SIZE_MISMATCH', `${first.source.uri} has ${obj.size} bytes, the request says ${first.size}`, { url: first.source.uri });
    // S3's own full-object checksum is a sha256 the source gives: no trust on first use needed.
    if (obj.sha256 !== undefined) return { key: { algo: 'sha256', hex: obj.sha256 }, file: s3.fileFor(obj, { algo: 'sha256', hex: obj.sha256 }), entries: group };
    file = s3.fileFor(obj, placeholder);
  } else {
    file = fileFor(source, first, placeholder);
  }
  return sized(ctx, manifest, { key: placeholder, file, entries: group, learn: true }, signal);
}

function fileFor(source: Parameters<typeof capable>[0], e: Entry, key: ContentKey): RemoteFile {
  return capable<HasFileFor>(source, 'fileFor').fileFor(e, key);
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

function asError(e: unknown): ModelsyncError {
  return e instanceof ModelsyncError ? e : new ModelsyncError('E_SYNC_FAILED', String(e), { cause: e });
}
