import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { spawnMeasured, spawnNode, type Measured, type SpawnOptions } from './rss.js';
import { REPO_ROOT, workDir } from './setup.js';

/** One modelsync installation: its own models, store (inside models) and state dirs. */
export interface SyncDirs {
  readonly dir: string;
  readonly models: string;
  readonly state: string;
  readonly manifest: string;
}

export interface ManifestEntry {
  readonly source: string;
  readonly dest: string;
}

export async function syncDirs(label: string, entries: readonly ManifestEntry[]): Promise<SyncDirs> {
  const dir = await workDir(label);
  const d = { dir, models: path.join(dir, 'models'), state: path.join(dir, 'state'), manifest: path.join(dir, 'manifest.json') };
  await mkdir(d.models, { recursive: true });
  await writeFile(d.manifest, JSON.stringify({ version: 1, models: entries }));
  return d;
}

export interface SyncRun extends Measured {
  readonly ok: boolean;
  readonly bytesFetched: number | undefined;
}

/**
 * `node bin/modelsync.js sync` with fresh dirs and HF_ENDPOINT at the stand-in, from a scrubbed
 * environment (no HF_TOKEN, no machine HOME), `--json` so the report can be read back.
 */
export async function modelsync(
  d: SyncDirs,
  endpoint: string,
  opts: { bin?: string | undefined; flags?: readonly string[]; env?: Readonly<Record<string, string>>; onPoll?: SpawnOptions['onPoll']; bare?: boolean } = {},
): Promise<SyncRun> {
  const args = ['sync', '--json', '--manifest', d.manifest, '--models-dir', d.models, '--state-dir', d.state, ...(opts.flags ?? [])];
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: d.dir,
    HF_ENDPOINT: endpoint,
    MODELSYNC_LOG_LEVEL: 'warn',
    ...opts.env,
  };
  const bin = path.resolve(REPO_ROOT, opts.bin ?? path.join('bin', 'modelsync.js'));
  const spawnOpts = { env, ...(opts.onPoll ? { onPoll: opts.onPoll } : {}) };
  // Bare: as a user runs it, without the exit reporter's module loader (no RSS or rchar then).
  const m = opts.bare ? await spawnMeasured(process.execPath, [bin, ...args], spawnOpts) : await spawnNode(bin, args, spawnOpts);
  let bytesFetched: number | undefined;
  let ok = false;
  try {
    const report = JSON.parse(m.stdout) as { ok?: boolean; bytesFetched?: number };
    ok = report.ok === true && m.code === 0;
    bytesFetched = report.bytesFetched;
  } catch {
    /* killed, or failed before printing a report */
  }
  return { ...m, ok, bytesFetched };
}
