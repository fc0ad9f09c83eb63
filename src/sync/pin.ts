import { createHash } from 'node:crypto';
import path from 'node:path';
import PQueue from 'p-queue';
import { ModelsyncError } from '../errors.js';
import { entryDisagreement, lockEntryFor, lockIndex, type LockEntry, type LockFile } from '../manifest/lock.js';
import type { Entry, Manifest, UnplacedEntry } from '../manifest/types.js';
import type { CivitaiLocator } from '../sources/civitai.js';
import type { ContentKey } from '../content-key.js';
import type { RemoteFile, Source } from '../sources/source.js';
import { RateFloor } from '../transfer/rate-floor.js';
import { withRetry } from '../transfer/retry.js';
import { tooLarge, type Room } from '../transfer/unsized-room.js';
import { hashMismatch, keyHasher } from '../transfer/verify.js';
import type { SyncContext } from './context.js';
import { placeForSync, unplacedLabel } from './place.js';
import { capable, probeSize, type DescribesS3, type HasFileFor } from './source-extras.js';

export interface PinOptions {
  /** The lock being replaced: entries it still pins correctly are kept as they are. */
  readonly previous: LockFile | undefined;
  /** Resolve every entry again, even those the previous lock pins (hf:// branches move on). */
  readonly refresh: boolean;
  readonly signal: AbortSignal;
}

export interface PinOutcome {
  readonly entry: Entry;
  readonly pin?: LockEntry | undefined;
  /** Taken unchanged from the previous lock. */
  readonly kept: boolean;
  readonly error?: ModelsyncError | undefined;
}

export interface PinResult {
  /** The new lock; undefined when any entry could not be pinned. */
  readonly lock: LockFile | undefined;
  readonly outcomes: readonly PinOutcome[];
}

/**
 * Placeholder key of a file whose sha256 we are about to learn by reading it: such a file is
 * only ever opened and hashed here, never handed to the download engine or the store.
 */
const TO_BE_LEARNED: ContentKey = { algo: 'sha256', hex: '' };

/**
 * Resolve every entry of a manifest (read without requiring hashes) to a pinned, reproducible
 * form: the commit of each hf:// revision, sizes, and a sha256 for every entry, downloading a
 * file once to compute it where neither the manifest nor the source gives one.
 */
export async function pinManifest(ctx: SyncContext, manifest: Manifest, opts: PinOptions): Promise<PinResult> {
  const prev = lockIndex(opts.previous);
  const outcomes = new Map<Entry, PinOutcome>();
  const groups = new Map<string, Entry[]>();
  // Civitai entries without dest: a previous lock that still applies keeps its derived dest;
  // the others are placed (the version asked of Civitai once) and then pinned like the rest.
  const all: Entry[] = [];
  const toPlace: UnplacedEntry[] = [];
  for (const e of manifest.unplaced) {
    const l = lockEntryFor(prev, e);
    if (l !== undefined && l.destDerived === true && !opts.refresh && entryDisagreement(e, l) === undefined) {
      const placed: Entry = { ...e, dest: l.dest, derived: true };
      all.push(placed);
      outcomes.set(placed, { entry: placed, pin: l, kept: true });
    } else toPlace.push(e);
  }
  const placement = await placeForSync(ctx, { ...manifest, unplaced: toPlace }, opts.signal);
  for (const f of placement.failed) {
    const shown: Entry = { ...f.entry, dest: unplacedLabel(f.entry) };
    all.push(shown);
    outcomes.set(shown, { entry: shown, kept: false, error: f.error });
  }
  const written = new Set(manifest.entries);
  const fresh = placement.manifest.entries.filter((e) => !written.has(e));
  all.push(...manifest.entries, ...fresh);
  for (const e of fresh) {
    const s = e.source;
    groups.set(`${s.kind}:${e.index}`, [e]);
  }
  for (const e of manifest.entries) {
    const l = lockEntryFor(prev, e);
    if (l !== undefined && !opts.refresh && entryDisagreement(e, l) === undefined) {
      outcomes.set(e, { entry: e, pin: l, kept: true });
      continue;
    }
    const s = e.source;
    const g = s.kind === 'hf' ? `hf:${s.repoType}:${s.repo}@${s.revision}` : `${s.kind}:${e.index}`;
    groups.set(g, [...(groups.get(g) ?? []), e]);
  }
  const queue = new PQueue({ concurrency: ctx.connections.lookups });
  await Promise.all(
    [...groups.values()].map((group) =>
      queue.add(async () => {
        const first = group[0] as Entry;
        try {
          const source = await ctx.sourceFor(first.source.kind, manifest);
          const pins =
            first.source.kind === 'hf'
              ? await pinHf(ctx, source, group, opts.signal)
              : first.source.kind === 'civitai'
                ? [await pinCivitai(ctx, source, first, opts.signal)]
                : [await pinOther(ctx, source, first, lockEntryFor(prev, first), opts.signal)];
          group.forEach((e, i) => outcomes.set(e, pins[i] as PinOutcome));
        } catch (err) {
          const me = err instanceof ModelsyncError ? err : new ModelsyncError('E_SYNC_FAILED', String(err), { cause: err });
          if (!(err instanceof ModelsyncError)) ctx.log.error({ err }, 'unexpected error');
          for (const e of group) outcomes.set(e, { entry: e, kept: false, error: me.forEntry(e.index, e.dest) });
        }
      }),
    ),
  );
  const list = all.sort((a, b) => a.index - b.index).map((e) => outcomes.get(e) ?? { entry: e, kept: false, error: new ModelsyncError('E_ABORTED', 'not locked') });
  const pins = list.map((o) => o.pin);
  const complete = pins.every((p): p is LockEntry => p !== undefined);
  return { outcomes: list, lock: complete ? { lockVersion: 1, manifest: path.basename(manifest.path), entries: pins } : undefined };
}

/**
 * A Civitai file: version, file and sha256 from the API (resolve), the exact size from the
 * download (a 1-byte range: the API's sizeKB is approximate), a derived dest as placed.
 */
async function pinCivitai(ctx: SyncContext, source: Source, e: Entry, signal: AbortSignal): Promise<PinOutcome> {
  const [f] = await source.resolve([e], signal);
  if (f === undefined) throw new Error('CivitaiSource resolved nothing');
  const { pin } = f.locator as CivitaiLocator;
  const size = f.size ?? (await probeSize(ctx, source, f, signal)) ?? (await hashRemote(ctx, source, f, signal, f.key)).size;
  const civitai = { version: pin.version, file: pin.file, type: pin.type, ...(pin.format === undefined ? {} : { format: pin.format }), ...(pin.size === undefined ? {} : { size: pin.size }), ...(pin.fp === undefined ? {} : { fp: pin.fp }) };
  return pinned(e, {
    source: e.source.uri,
    dest: e.dest,
    size,
    sha256: f.key.hex,
    sha256From: 'civitai',
    civitai,
    ...(e.derived ? { destDerived: true as const } : {}),
    ...(e.file === undefined ? {} : { file: e.file }),
  });
}

/** One Hub lookup per repo@revision; small non-LFS files are read once for their sha256. */
async function pinHf(ctx: SyncContext, source: Source, group: readonly Entry[], signal: AbortSignal): Promise<PinOutcome[]> {
  const files = await source.resolve(group, signal);
  return Promise.all(
    group.map(async (e, i): Promise<PinOutcome> => {
      const f = files[i] as RemoteFile;
      try {
        const base = { source: e.source.uri, dest: e.dest, commit: f.commit };
        if (f.key.algo === 'sha256' && f.size !== undefined) return pinned(e, { ...base, size: f.size, sha256: f.key.hex, sha256From: 'hub' });
        ctx.log.info({ dest: e.dest, uri: f.uri }, 'the Hub gives no sha256 for this file: reading it once to compute one');
        const h = await hashRemote(ctx, source, f, signal, f.key);
        if (e.sha256 !== undefined && e.sha256 !== h.sha256) throw manifestMismatch(e, h.sha256);
        const gitsha1 = f.key.algo === 'gitsha1' ? { gitsha1: f.key.hex } : {};
        return pinned(e, { ...base, ...gitsha1, size: h.size, sha256: h.sha256, sha256From: 'download' });
      } catch (err) {
        if (!(err instanceof ModelsyncError)) throw err;
        return { entry: e, kept: false, error: err.forEntry(e.index, e.dest) };
      }
    }),
  );
}

async function pinOther(ctx: SyncContext, source: Source, e: Entry, prev: LockEntry | undefined, signal: AbortSignal): Promise<PinOutcome> {
  const base = { source: e.source.uri, dest: e.dest };
  if (e.source.kind === 's3') {
    const s3 = capable<DescribesS3>(source, 'describe');
    const obj = await s3.describe(e, signal);
    if (e.size !== undefined && e.size !== obj.size) {
      throw new ModelsyncError('E_SIZE_MISMATCH', `${e.source.uri} has ${obj.size} bytes, the manifest says ${e.size}`, { url: e.source.uri });
    }
    const s3base = { ...base, size: obj.size, ...(obj.etag === undefined ? {} : { etag: obj.etag }) };
    if (e.sha256 !== undefined) {
      if (obj.sha256 !== undefined && obj.sha256 !== e.sha256) throw manifestMismatch(e, obj.sha256, "S3's full-object ChecksumSHA256");
      return pinned(e, { ...s3base, sha256: e.sha256, sha256From: 'manifest' });
    }
    if (obj.sha256 !== undefined) return pinned(e, { ...s3base, sha256: obj.sha256, sha256From: 's3-checksum' });
    // The object is the one hashed before (same ETag, same size): no need to read it again.
    if (prev?.etag !== undefined && prev.etag === obj.etag && prev.size === obj.size) return pinned(e, { ...s3base, sha256: prev.sha256, sha256From: prev.sha256From });
    ctx.log.info({ dest: e.dest, uri: e.source.uri }, 'no sha256 in the manifest: downloading once to compute it');
    const h = await hashRemote(ctx, source, s3.fileFor(obj, TO_BE_LEARNED), signal, undefined);
    return pinned(e, { ...s3base, sha256: h.sha256, sha256From: 'download' });
  }
  const file = capable<HasFileFor>(source, 'fileFor').fileFor(e, e.sha256 === undefined ? TO_BE_LEARNED : { algo: 'sha256', hex: e.sha256 });
  if (e.sha256 !== undefined) {
    const size = e.size ?? (await probeSize(ctx, source, file, signal));
    if (size !== undefined) return pinned(e, { ...base, size, sha256: e.sha256, sha256From: 'manifest' });
  }
  ctx.log.info({ dest: e.dest, uri: file.uri }, e.sha256 === undefined ? 'no sha256 in the manifest: downloading once to compute it' : 'the server gives no size: downloading once to learn it');
  const h = await hashRemote(ctx, source, file, signal, undefined);
  if (e.sha256 !== undefined && h.sha256 !== e.sha256) throw manifestMismatch(e, h.sha256);
  if (e.size !== undefined && h.size !== e.size) {
    throw new ModelsyncError('E_SIZE_MISMATCH', `${file.uri} has ${h.size} bytes, the manifest says ${e.size}`, { url: file.uri });
  }
  return pinned(e, { ...base, size: h.size, sha256: h.sha256, sha256From: e.sha256 === undefined ? 'download' : 'manifest' });
}

function pinned(e: Entry, pin: LockEntry): PinOutcome {
  return { entry: e, pin, kept: false };
}

function manifestMismatch(e: Entry, actual: string, whose = 'the downloaded bytes'): ModelsyncError {
  return new ModelsyncError('E_HASH_MISMATCH', `${e.source.uri}: the manifest says sha256 ${e.sha256 ?? '?'}, ${whose} hash to ${actual}`, { url: e.source.uri });
}

/**
 * Read a whole file once and hash it (a retry starts over: these are the files nobody gave a
 * hash for, usually small; so no attempt is progress, and a body that always ends short gives up
 * after the policy's attempts). With `verify`, the bytes must also match the source's own key.
 */
async function hashRemote(ctx: SyncContext, source: Source, file: RemoteFile, signal: AbortSignal, verify: ContentKey | undefined): Promise<{ sha256: string; size: number }> {
  return withRetry(
    async () => {
      const t = ctx.config.tunables;
      const floor = new RateFloor({ minRate: t.minRate, windowMs: t.minRateWindowMs }, signal);
      const res = await source.open(file, { range: undefined, signal: floor.signal }).catch((e: unknown) => {
        floor.stop();
        throw e;
      });
      floor.start(res.origin ?? file.uri);
      const sha = createHash('sha256');
      const other = verify?.algo === 'gitsha1' ? keyHasher('gitsha1', file.size) : undefined;
      // Nothing is written here, but a stream without a size still must end: at the same cap.
      const room: Room = { bytes: t.maxUnsized, by: 'cap' };
      const limit = file.size ?? res.length ?? room.bytes;
      let n = 0;
      try {
        if (file.size === undefined && res.length !== undefined && res.length > room.bytes) throw tooLarge(file.uri, room, res.length);
        for (let chunk = await res.body.next(); chunk !== null; chunk = await res.body.next()) {
          n += chunk.length;
          if (n > limit && file.size === undefined && res.length === undefined) throw tooLarge(file.uri, room, undefined);
          if (n > limit) throw new ModelsyncError('E_SIZE_MISMATCH', `${file.uri}: more than the expected ${limit} bytes`, { url: file.uri });
          floor.count(chunk.length);
          sha.update(chunk);
          other?.update(chunk);
        }
      } catch (e) {
        res.body.destroy();
        if (floor.tripped) throw floor.tripped;
        throw e instanceof ModelsyncError ? e : new ModelsyncError('E_NETWORK', `${file.uri}: download cut at byte ${n}`, { url: file.uri, retryable: true, cause: e });
      } finally {
        floor.stop();
      }
      const expected = file.size ?? res.length;
      if (expected !== undefined && n < expected) {
        throw new ModelsyncError('E_NETWORK', `${file.uri}: body ended at byte ${n} of ${expected}`, { url: file.uri, retryable: true });
      }
      if (other !== undefined && verify !== undefined) {
        const hex = other.digest('hex');
        if (hex !== verify.hex) throw hashMismatch(file.uri, verify, hex);
      }
      return { sha256: sha.digest('hex'), size: n };
    },
    ctx.policy,
    { signal },
  );
}
