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

export type SourceRef = HfRef | S3Ref | HttpsRef;

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
}

/** A locked entry's content: enough to fetch and verify it without asking the Hub anything. */
export interface PinnedContent {
  /** Hub commit, for hf:// entries. */
  readonly commit: string | undefined;
  /** What the bytes must hash to: the Hub's own key (git sha1 for small non-LFS files), else sha256. */
  readonly algo: 'sha256' | 'gitsha1';
  readonly hex: string;
  readonly size: number;
}

export interface S3Options {
  readonly endpoint: string | undefined;
  readonly region: string | undefined;
  readonly pathStyle: boolean | undefined;
}

export type { OnDemandPolicy } from './policy.js';

export interface Manifest {
  /** Absolute path of the file it was read from. */
  readonly path: string;
  readonly entries: readonly Entry[];
  /** Extra top-level folders allowed in `dest` (custom nodes add their own). */
  readonly folders: readonly string[];
  readonly s3: S3Options;
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
