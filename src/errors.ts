/**
 * The one error class of modelsync. `code` is stable (tests and scripts match on it), `exitCode`
 * decides the CLI's exit status, and the original error travels in `cause`.
 * An error that is not a ModelsyncError is a bug: the CLI prints its stack.
 */
export type ErrorCode =
  | 'E_USAGE'
  | 'E_MANIFEST'
  | 'E_LOCK_DRIFT'
  | 'E_CONFIG'
  | 'E_STATE_DIR'
  | 'E_STORE_LAYOUT'
  | 'E_AUTH'
  | 'E_GATED'
  | 'E_EARLY_ACCESS'
  | 'E_NOT_DOWNLOADABLE'
  | 'E_NOT_FOUND'
  | 'E_OFFLINE'
  | 'E_HTTP'
  | 'E_NETWORK'
  | 'E_PROXY'
  | 'E_TIMEOUT'
  | 'E_REDIRECT'
  | 'E_INSECURE_REDIRECT'
  | 'E_RATE_LIMITED'
  | 'E_RANGE'
  | 'E_SIZE_MISMATCH'
  | 'E_HASH_MISMATCH'
  | 'E_CORRUPT'
  | 'E_NO_SPACE'
  | 'E_DISK_FULL'
  | 'E_PATH_UNSAFE'
  | 'E_PUBLISH'
  | 'E_SOURCE_CHANGED'
  | 'E_REMOTE_INVALID'
  | 'E_FETCH_BUDGET'
  | 'E_TOO_SLOW'
  | 'E_TOO_LARGE'
  | 'E_S3'
  | 'E_LEASE_LOST'
  | 'E_ABORTED'
  | 'E_SYNC_FAILED'
  | 'E_DAEMON'
  | 'E_CHILD'
  | 'E_STATE_LOCKED'
  | 'E_STATE_DB'
  | 'E_NOT_WRITABLE'
  | 'E_LIMIT'
  | 'E_POLICY'
  | 'E_IO';

const EXIT_BY_CODE: Partial<Record<ErrorCode, number>> = {
  E_USAGE: 2,
  E_MANIFEST: 2,
  E_LOCK_DRIFT: 2,
  E_CONFIG: 2,
  E_STATE_DIR: 2,
  // An on-demand request the manifest's on_demand policy refuses: asking again will not help.
  E_POLICY: 2,
  // A limit too low to run (`ulimit -n`, `-v`): no restart fixes it, the invocation must change.
  E_LIMIT: 2,
};

export interface ErrorContext {
  /** Index of the manifest entry involved, when there is one. */
  entry?: number | undefined;
  /** The entry's dest, for messages. */
  dest?: string | undefined;
  /** A URL or source URI, already stripped of any query string. */
  url?: string | undefined;
  /** HTTP status, when the error is an HTTP answer. */
  status?: number | undefined;
  /** Whether retrying the same operation may succeed. */
  retryable?: boolean | undefined;
  /** Milliseconds the server asked us to wait (Retry-After). */
  retryAfterMs?: number | undefined;
  cause?: unknown;
}

export class ModelsyncError extends Error {
  override readonly name = 'ModelsyncError';
  readonly code: ErrorCode;
  readonly entry: number | undefined;
  readonly dest: string | undefined;
  readonly url: string | undefined;
  readonly status: number | undefined;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, ctx: ErrorContext = {}) {
    super(message, ctx.cause === undefined ? undefined : { cause: ctx.cause });
    this.code = code;
    this.entry = ctx.entry;
    this.dest = ctx.dest;
    this.url = ctx.url;
    this.status = ctx.status;
    this.retryable = ctx.retryable ?? false;
    this.retryAfterMs = ctx.retryAfterMs;
  }

  get exitCode(): number {
    return EXIT_BY_CODE[this.code] ?? 1;
  }

  /** The same error, tagged with the manifest entry it happened for. */
  forEntry(entry: number, dest: string): ModelsyncError {
    if (this.entry !== undefined) return this;
    const e = new ModelsyncError(this.code, `entry ${entry} (${dest}): ${this.message}`, {
      entry,
      dest,
      retryable: this.retryable,
      cause: this.cause ?? this,
      url: this.url,
      status: this.status,
      retryAfterMs: this.retryAfterMs,
    });
    return e;
  }
}

/** errno codes of a failed syscall, as Node reports them. */
export function errnoCode(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string') return e.code;
  return undefined;
}
