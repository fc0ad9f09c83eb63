/**
 * The on-demand service in this process, over a real sync context (state DB, store, the Hub
 * stand-in), for tests that drive it the way the daemon and the gate do.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { parseManifest } from '../../src/manifest/load.js';
import type { Manifest } from '../../src/manifest/types.js';
import { OnDemand } from '../../src/ondemand/on-demand.js';
import type { JobSnapshot, ModelEvent } from '../../src/ondemand/service.js';
import { openContext, type SyncContext } from '../../src/sync/context.js';
import { sandbox, type Sandbox } from './cli.js';

export interface Rig {
  readonly sb: Sandbox;
  readonly ctx: SyncContext;
  readonly service: OnDemand;
  readonly events: ModelEvent[];
  /** The manifest in force; `setManifest` swaps it, as a reload does. */
  manifest: Manifest;
  setManifest(yaml: string): void;
  /** Submit and wait for the job to settle. */
  ensure(requests: unknown[], holder?: ReturnType<OnDemand['holder']>): Promise<JobSnapshot>;
  /** This install's reference record in the store. */
  refs(): Promise<{ keys: string[]; onDemand?: string[] }>;
  close(): Promise<void>;
}

export async function onDemandRig(hubEndpoint: string, manifestYaml: string, env: Record<string, string> = {}): Promise<Rig> {
  const sb = await sandbox(hubEndpoint);
  const config = loadConfig({}, sb.env(env), false);
  const ctx = await openContext(config, silentLogger());
  const halt = new AbortController();
  const events: ModelEvent[] = [];
  const rig: Rig = {
    sb,
    ctx,
    events,
    manifest: parseManifest(manifestYaml, sb.manifest),
    setManifest(yaml) {
      rig.manifest = parseManifest(yaml, sb.manifest);
    },
    service: undefined as unknown as OnDemand,
    async ensure(requests, holder) {
      const job = await rig.service.submit(requests, holder ? { holder } : {});
      return job.settled;
    },
    async refs() {
      const node = ctx.db.identity(config.modelsDir, ctx.store.root);
      return JSON.parse(await readFile(path.join(ctx.store.refs, `${node}.json`), 'utf8')) as { keys: string[]; onDemand?: string[] };
    },
    async close() {
      halt.abort();
      await rig.service.drain();
      ctx.close();
      await sb.cleanup();
    },
  };
  (rig as { service: OnDemand }).service = new OnDemand({ ctx, manifest: () => rig.manifest, signal: halt.signal });
  rig.service.subscribe((e) => events.push(e));
  return rig;
}
