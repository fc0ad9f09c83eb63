import type { MirrorRef, S3MirrorRef } from './mirror-uri.js';
import type { OnDemandPolicy } from './policy.js';

export interface HfRef {
  readonly kind: 'hf';
  readonly repoType: 'model' | 'dataset';
  /** "org/name" */
  readonly repo: string;
  /** Branch, tag or commit; decoded (a "/" in it arrives percent-encoded in the URI). */
  readonly revision: string;
  /** Path inside the repo. */
  readonly path: string;
  readonly uri: string;
}

export interface S3Ref {
  readonly kind: 's3';
  readonly bucket: string;
  /** Taken literally: spaces and unicode allowed, no percent-decoding. */
  readonly key: string;
  readonly uri: string;
}

export interface HttpsRef {
  readonly kind: 'https';
  readonly url: string;
  readonly uri: string;
}

/** Which file of a Civitai model version: the download URL's own parameters. */
export interface CivitaiFileQuery {
  /** `Model`, `Pruned Model`, `VAE`, `Config`, `Training Data`, ... */
  readonly type?: string | undefined;
  /** `SafeTensor`, `PickleTensor`, `GGUF`, `Diffusers`, `Other`. */
  readonly format?: string | undefined;
  /** `full` or `pruned`. */
  readonly size?: string | undefined;
  /** `fp16`, `fp32`, `bf16`, `fp8`, `nf4`. */
  readonly fp?: string | undefined;
}

/** `civitai://VERSION`, `urn:air:...:civitai:MODEL@VERSION`, or the site's own download URL. */
export interface CivitaiRef {
  readonly kind: 'civitai';
  /** The model version: immutable, what the REST API resolves. */
  readonly versionId: number;
  /** The model, when the source names it (an AIR, a model page URL). */
  readonly modelId: number | undefined;
  readonly query: CivitaiFileQuery;
  readonly uri: string;
}

export type SourceRef = HfRef | S3Ref | HttpsRef | CivitaiRef;

export interface Entry {
  /** Position in the manifest's `models` list, for messages. */
  readonly index: number;
  readonly source: SourceRef;
  /** Relative to the models dir, "/"-separated, validated safe. */
  readonly dest: string;
  readonly sha256: string | undefined;
  readonly size: number | undefined;
  readonly allowPickle: boolean;
  readonly required: boolean;
  /** Set when a lock file applies: what the entry resolved to when it was locked. */
  readonly pinned?: PinnedContent | undefined;
  /** civitai entries: the file of the version, by name (`file:`); else the primary one. */
  readonly file?: string | undefined;
  /** The dest was derived from the source (a civitai entry written without one), not written. */
  readonly derived?: true | undefined;
}

/**
 * A civitai entry written without `dest`: its dest comes from the model type and the file's
 * name, known once the version is resolved (from the state DB or a lock without the network,
 * else from Civitai). Until then it is listed here, not in `entries`: see sync/place.ts.
 */
export interface UnplacedEntry extends Omit<Entry, 'dest' | 'source' | 'derived'> {
  readonly source: CivitaiRef;
}

/** A locked entry's content: enough to fetch and verify it without asking the Hub anything. */
export interface PinnedContent {
  /** Hub commit, for hf:// entries. */
  readonly commit: string | undefined;
  /** What the bytes must hash to: the Hub's own key (git sha1 for small non-LFS files), else sha256. */
  readonly algo: 'sha256' | 'gitsha1';
  readonly hex: string;
  readonly size: number;
  /** civitai entries: the version's file, enough to download it without asking the API. */
  readonly civitai?: CivitaiPin | undefined;
}

/** A Civitai file as a lock pins it: the version, the file's name, and the download URL's parameters. */
export interface CivitaiPin {
  readonly version: number;
  readonly file: string;
  readonly type: string;
  readonly format?: string | undefined;
  readonly size?: string | undefined;
  readonly fp?: string | undefined;
}

export interface S3Options {
  readonly endpoint: string | undefined;
  readonly region: string | undefined;
  readonly pathStyle: boolean | undefined;
}

export type { OnDemandPolicy } from './policy.js';
export type { MirrorRef, S3MirrorRef, HttpsMirrorRef } from './mirror-uri.js';

export interface Manifest {
  /** Absolute path of the file it was read from. */
  readonly path: string;
  readonly entries: readonly Entry[];
  /** civitai entries whose dest is still to be derived (sync/place.ts moves them into `entries`). */
  readonly unplaced: readonly UnplacedEntry[];
  /** Extra top-level folders allowed in `dest` (custom nodes add their own). */
  readonly folders: readonly string[];
  readonly s3: S3Options;
  /** `mirrors:`, in order; absent or empty: none. */
  readonly mirrors?: readonly MirrorRef[] | undefined;
  /** `mirror_write:`: where a node uploads what it fetched from an origin. */
  readonly mirrorWrite?: S3MirrorRef | undefined;
  /** `on_demand:`; undefined: every on-demand request is refused. */
  readonly onDemand?: OnDemandPolicy | undefined;
}

export interface ManifestProblem {
  /** Entry index, or undefined for a top-level problem. */
  readonly entry: number | undefined;
  /** Dotted field path, e.g. "dest" or "version". */
  readonly field: string;
  readonly line: number | undefined;
  readonly message: string;
}
