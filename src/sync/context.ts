import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { SourceRef } from '../manifest/types.js';
import type { Manifest } from '../manifest/types.js';
import type { Source } from '../sources/source.js';
import { StateDb } from '../state/db.js';
import { openStore, type StoreLayout } from '../store/layout.js';
import { newToken } from '../store/lease.js';
import { systemClock, type Clock } from '../clock.js';
import { ConnectionBudget } from '../transfer/budget.js';
import type { RetryPolicy } from '../transfer/retry.js';
import { Mirrors } from './mirrors.js';
import { WriteBack } from './write-back.js';

/** Everything a sync needs, opened once per process and shared by every sync it runs. */
export interface SyncContext {
  readonly config: Config;
  readonly log: Logger;
  readonly db: StateDb;
  readonly store: StoreLayout;
  /** --connections and all that is sized from it (transfer/budget.ts). */
  readonly connections: ConnectionBudget;
  readonly policy: RetryPolicy;
  readonly clock: Clock;
  /** Random per process: names our partials and leases (hostnames repeat across pods). */
  readonly token: string;
  /** True when the state DB was just recreated: store blobs are re-hashed before being trusted. */
  readonly dbRecreated: boolean;
  /** Blobs being fetched in this process (by key name), settled when done: see fetchBlob. */
  readonly inflight: Map<string, Promise<void>>;
  /** The manifest's mirrors (tried before the origin) and which are benched after a failure. */
  readonly mirrors: Mirrors;
  /** Uploads to the manifest's mirror_write, in the background (see WriteBack). */
  readonly writeBack: WriteBack;
  sourceFor(kind: SourceRef['kind'], manifest: Manifest): Promise<Source>;
  close(): void;
}

/**
 * `dbRecreated`: a warm start's open of the state DB already replaced an unreadable one (its
 * reason): this open finds a fresh DB, but the sync must still treat it as recreated.
 */
export async function openContext(config: Config, log: Logger, clock: Clock = systemClock, dbRecreated?: string): Promise<SyncContext> {
  let recreated = false;
  const onRecreated = (why: string): void => {
    recreated = true;
    log.warn(why);
  };
  if (dbRecreated !== undefined) onRecreated(dbRecreated);
  const db = StateDb.open(config.stateDir, { onRecreated, busyTimeoutMs: config.tunables.stateBusyTimeoutMs });
  const store = await openStore(config.storeDir, { modelsDir: config.modelsDir });
  const t = config.tunables;
  if (t.connections < t.connectionsWanted) log.warn({ connections: t.connections, asked: t.connectionsWanted }, 'fewer connections than asked: the open-file limit (ulimit -n) leaves room for no more');
  const connections = new ConnectionBudget(t.connections, {
    hostCeiling: t.hostConnections,
    now: () => clock.now(),
    onHostLimit: (host, n, was, why) => (why === 'throttled' ? log.info : log.debug).call(log, { host, connections: n, was, why }, 'connections to a host changed'),
  });
  const sources = new Map<string, Promise<Source>>();
  // Sources are imported lazily: a warm start needs none of them (nor the AWS SDK's load time).
  const make = async (kind: SourceRef['kind'], manifest: Manifest): Promise<Source> => {
    if (kind === 'hf') {
      const { HfSource } = await import('../sources/hf.js');
      return new HfSource({ endpoint: config.hf.endpoint, token: config.hf.token, offline: config.hf.offline, idleTimeoutMs: t.idleTimeoutMs, rate: { minRate: t.minRate, windowMs: t.minRateWindowMs }, db, proxies: config.proxies, connections });
    }
    if (kind === 'https') {
      const { HttpsSource } = await import('../sources/https.js');
      return new HttpsSource({ tokens: config.httpTokens, idleTimeoutMs: t.idleTimeoutMs, proxies: config.proxies, connections });
    }
    if (kind === 'civitai') {
      const { CivitaiSource } = await import('../sources/civitai.js');
      const policy = { attempts: t.retryAttempts, baseMs: t.retryBaseMs, maxWaitMs: t.retryMaxWaitMs };
      const c = config.civitai;
      return new CivitaiSource({ endpoint: c.endpoint, token: c.token, offline: config.hf.offline, refresh: config.refresh, idleTimeoutMs: t.idleTimeoutMs, db, proxies: config.proxies, policy, connections, rate: { minRate: t.minRate, windowMs: t.minRateWindowMs } });
    }
    const { S3Source } = await import('../sources/s3.js');
    return new S3Source({ config, manifest, idleTimeoutMs: t.idleTimeoutMs, connections });
  };
  const policy = { attempts: t.retryAttempts, baseMs: t.retryBaseMs, maxWaitMs: t.retryMaxWaitMs };
  const writeBack = new WriteBack({ config, log, store, connections });
  return {
    config,
    log,
    db,
    store,
    connections,
    policy,
    clock,
    token: newToken(),
    dbRecreated: recreated,
    inflight: new Map(),
    mirrors: new Mirrors({ config, connections, policy, clock }),
    writeBack,
    sourceFor(kind, manifest) {
      const k = kind === 's3' ? `s3:${manifest.path}` : kind;
      let s = sources.get(k);
      if (!s) {
        s = make(kind, manifest);
        sources.set(k, s);
      }
      return s;
    },
    close() {
      writeBack.close();
      db.close();
      void store.close();
    },
  };
}
