import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Manifest } from '../manifest/types.js';
import type { Mirror } from '../sources/mirror.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import type { RetryPolicy } from '../transfer/retry.js';

/**
 * How long a mirror that failed (down, timing out, refusing our credentials) is left out before
 * it is tried again: its retries would otherwise be waited out once for every blob of a sync.
 */
export const MIRROR_BENCH_MS = 60_000;

/** The mirrors of each manifest, made once per process, and which of them are benched. */
export class Mirrors {
  private readonly made = new Map<string, Promise<readonly Mirror[]>>();
  private readonly benchedUntil = new Map<string, number>();

  constructor(private readonly opts: { config: Config; connections: ConnectionBudget; policy: RetryPolicy; clock: Clock }) {}

  /** `manifest.mirrors`, in order, each with a client of its own (sharing the connection budget). */
  for(manifest: Manifest): Promise<readonly Mirror[]> {
    const refs = manifest.mirrors ?? [];
    if (refs.length === 0) return Promise.resolve([]);
    const k = JSON.stringify([manifest.path, refs, manifest.s3]);
    let m = this.made.get(k);
    if (!m) {
      m = this.make(manifest);
      this.made.set(k, m);
    }
    return m;
  }

  /** False while the mirror sits out a failure. */
  usable(m: Mirror): boolean {
    const until = this.benchedUntil.get(m.ref.uri);
    return until === undefined || this.opts.clock.now() >= until;
  }

  bench(m: Mirror): void {
    this.benchedUntil.set(m.ref.uri, this.opts.clock.now() + MIRROR_BENCH_MS);
  }

  private async make(manifest: Manifest): Promise<readonly Mirror[]> {
    const { config, connections, policy } = this.opts;
    const t = config.tunables;
    // Loaded only when a manifest names mirrors: a warm start needs none of this.
    const { s3Mirror, httpsMirror } = await import('../sources/mirror.js');
    const out: Mirror[] = [];
    for (const ref of manifest.mirrors ?? []) {
      if (ref.kind === 's3') {
        const { S3Source } = await import('../sources/s3.js');
        out.push(s3Mirror(ref, new S3Source({ config, manifest, idleTimeoutMs: t.idleTimeoutMs, connections })));
      } else {
        const { HttpsSource } = await import('../sources/https.js');
        out.push(httpsMirror(ref, new HttpsSource({ tokens: config.httpTokens, idleTimeoutMs: t.idleTimeoutMs, proxies: config.proxies, connections }), policy));
      }
    }
    return out;
  }
}
