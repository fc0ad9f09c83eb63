import type { ErrorCode } from '../errors.js';

/**
 * The on-demand service: models fetched when a caller asks for them (the control API's
 * POST /models, `modelsync ensure`, the gate in front of ComfyUI), under the manifest's
 * `on_demand` policy, into a layer of their own that is evicted least-recently-used.
 *
 * A request is JSON from outside, taken as `unknown` and validated here, in one of two shapes:
 * - a manifest entry: `{source, dest, sha256?, size?, allow_pickle?}`;
 * - a ComfyUI workflow model: `{name, url, directory, hash?, hash_type?}`, published at
 *   `directory/name`; `hash` counts only when `hash_type` is sha256.
 * Unknown fields are refused, as in a manifest. A Hub `resolve` URL (huggingface.co, hf.co, or
 * under HF_ENDPOINT) is read as the `hf://ORG/NAME@REV/PATH` it names, for the policy and so that
 * the Hub's own sha256 verifies it.
 */
export type ModelState = 'queued' | 'downloading' | 'verifying' | 'ready' | 'failed' | 'evicted';

/** One entry of a job, or of the layer, as callers see it. */
export interface ModelProgress {
  /** Where it is published, relative to the models dir (`loras/x.safetensors`). */
  readonly dest: string;
  /** The normalised source URI the policy was matched against (no query string). */
  readonly source: string;
  readonly state: ModelState;
  /** Bytes in place: received so far, or the whole size once ready. */
  readonly bytes: number;
  /** The size, once known (the Hub and S3 say it before the download). */
  readonly total: number | undefined;
  /** Bytes per second over the last few seconds (0 unless downloading). */
  readonly speed: number;
  /** Set when `state` is 'failed': the stable code and one line. */
  readonly error?: { readonly code: ErrorCode; readonly message: string } | undefined;
  /**
   * 'ready' because a file modelsync did not place was already at `dest`: left alone (never
   * replaced, never evicted), not verified. ComfyUI loads it, as it would without modelsync.
   */
  readonly unmanaged?: true | undefined;
}

export interface JobSnapshot {
  readonly id: string;
  /** Every entry is ready or failed. */
  readonly done: boolean;
  /** Every entry is ready. */
  readonly ok: boolean;
  /** In the order of the request. */
  readonly models: readonly ModelProgress[];
}

export interface Job {
  readonly id: string;
  /** The entries' states right now. */
  snapshot(): JobSnapshot;
  /** Resolves once every entry is ready or failed; never rejects. */
  readonly settled: Promise<JobSnapshot>;
}

/** What subscribers receive: each state change, and progress while downloading (throttled). */
export interface ModelEvent {
  readonly type: ModelState | 'progress';
  /** The job that asked for it; undefined for an eviction (the layer's own decision). */
  readonly job: string | undefined;
  readonly model: ModelProgress;
}

/**
 * A pin: every entry of a job submitted with it stays out of eviction until `release()`. The gate
 * takes one per prompt and releases it when the prompt has run. Pins live in this process only
 * (a prompt does not outlive it).
 */
export interface Holder {
  readonly id: string;
  /** Unpin everything this holder pinned; later calls do nothing. */
  release(): void;
}

export interface SubmitOptions {
  /** Pin the job's entries while this holder is held. */
  readonly holder?: Holder | undefined;
}

/** What /status and /metrics show of the layer. */
export interface LayerStatus {
  /** False without an `on_demand` key in the manifest: every request is refused. */
  readonly enabled: boolean;
  readonly maxBytes: number | undefined;
  /** Distinct content of the layer that no manifest entry needs, counted once per blob. */
  readonly bytesUsed: number;
  readonly entries: number;
  readonly pinned: number;
  readonly evictions: number;
  readonly jobsRunning: number;
}

export interface OnDemandService {
  /**
   * Validate every request, then start them as one job. Refused as a whole, before anything
   * starts, when any request is: the promise rejects with a ModelsyncError whose `entry` is the
   * request's index and `dest` its dest (when it has one), code E_POLICY (the policy named in the
   * message), E_MANIFEST (what a manifest entry would be refused for) or E_USAGE (not a request).
   * Entries already in place are 'ready' at once. What can only be known later (a size beyond
   * `max_bytes`, a download that fails) fails that entry in the job, with the same codes.
   */
  submit(requests: readonly unknown[], opts?: SubmitOptions): Promise<Job>;
  /** A job by id, while it is remembered (running, or among the last finished ones). */
  job(id: string): Job | undefined;
  /** Every event of every job and of the layer; returns the unsubscribe function. */
  subscribe(listener: (e: ModelEvent) => void): () => void;
  /** A new pin holder; `label` is for logs (e.g. the prompt id). */
  holder(label: string): Holder;
  status(): LayerStatus;
}
