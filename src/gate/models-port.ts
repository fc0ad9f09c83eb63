/**
 * What the gate needs of the on-demand service (src/ondemand/service.ts): submit a prompt's
 * models as one job, pinned by a holder while the prompt runs. Declared here, as the gate uses
 * it, so that the service's fuller interface satisfies it as it is.
 */

export interface GateHolder {
  readonly id: string;
  release(): void;
}

export interface GateModelOutcome {
  /** Where it is (or would have been) published, relative to the models dir. */
  readonly dest: string;
  readonly state: string;
  /** Bytes in place so far; the size once known; bytes per second while downloading. */
  readonly bytes: number;
  readonly total: number | undefined;
  readonly speed: number;
  readonly error?: { readonly code: string; readonly message: string } | undefined;
}

export interface GateJobSnapshot {
  readonly ok: boolean;
  readonly models: readonly GateModelOutcome[];
}

export interface GateJob {
  readonly id: string;
  snapshot(): GateJobSnapshot;
  /** Resolves once every entry is ready or failed; never rejects. */
  readonly settled: Promise<GateJobSnapshot>;
}

/** A state change or progress of one entry of a job. */
export interface GateModelEvent {
  readonly type: string;
  readonly job: string | undefined;
  readonly model: GateModelOutcome;
}

export interface GateModels {
  /**
   * Start the requests as one job, or reject (a ModelsyncError whose `entry` is the index of the
   * request refused: E_POLICY, E_MANIFEST, E_USAGE) before anything starts.
   */
  submit(requests: readonly unknown[], opts?: { readonly holder?: GateHolder | undefined }): Promise<GateJob>;
  holder(label: string): GateHolder;
}

/** What --gate-frontend-downloads needs besides: progress, and the policy's answer without a download. */
export interface FrontendModels extends GateModels {
  subscribe(listener: (e: GateModelEvent) => void): () => void;
  /** Would the policy (and the manifest's entry rules) take this request? Nothing starts. */
  allows(request: unknown): Promise<boolean>;
}
