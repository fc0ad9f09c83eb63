/**
 * Issue 6 benchmark: N modelsync processes on one store (one shared volume, N nodes), one large
 * blob behind a CDN paced per connection. Reports bytes served by origin / blob size, and wall
 * time against a single node. Goals: <= 1.1x bytes, <= 1.2x time.
 *
 *   npx tsx bench/shared-volume.ts [--size-mb 300] [--nodes 2,4,8] [--mbps-per-conn 2]
 *
 * `--size-mb 30` makes a smoke run. Every node has its own state dir and models dir; all use
 * the default lease timings (stale 60 s), as production would. Needs `npm run build` first.
 */
import { spawn } from 'node:child_process';
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { fileSha256, writeManifest } from '../test/support/cli-nodes.js';
import { killAll, track } from './children.js';
import { REPO_ROOT, removeDir, startHubChild, workDir } from './setup.js';

export interface SharedVolumeBenchOptions {
  readonly sizeBytes: number;
  readonly nodeCounts: readonly number[];
  /** CDN pacing per connection (bytes/s). */
  readonly bytesPerSecond: number;
  readonly log?: (line: string) => void;
}

export interface SharedVolumeRow {
  readonly nodes: number;
  readonly seconds: number;
  /** Wall time / the single node's. */
  readonly timeRatio: number;
  /** Bytes origin served / blob size. */
  readonly bytesRatio: number;
  readonly ok: boolean;
  readonly note: string;
}

const REPO = 'bench-org/shared-volume';
const FILE = 'model.safetensors';
const BIN = path.join(REPO_ROOT, 'bin', 'modelsync.js');

function runNode(dir: string, manifest: string, store: string, endpoint: string): Promise<{ code: number | null; stderr: string }> {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, MODELSYNC_STATE_DIR: path.join(dir, 'state'), HF_ENDPOINT: endpoint, MODELSYNC_LOG_LEVEL: 'warn' };
  const args = [BIN, 'sync', '--manifest', manifest, '--models-dir', path.join(dir, 'models'), '--store-dir', store, '--state-dir', path.join(dir, 'state')];
  const child = track(spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

export async function sharedVolumeBench(opts: SharedVolumeBenchOptions): Promise<SharedVolumeRow[]> {
  const log = opts.log ?? ((l: string) => void process.stderr.write(`bench: ${l}\n`));
  const hub = await startHubChild();
  const rows: SharedVolumeRow[] = [];
  try {
    const added = await hub.addModel(REPO, FILE, opts.sizeBytes, 606);
    await hub.setFaults(added.sha256, { bytesPerSecond: opts.bytesPerSecond });
    let single: number | undefined;
    for (const n of [1, ...opts.nodeCounts.filter((c) => c !== 1)]) {
      const dir = await workDir(`shared-${n}`);
      try {
        const manifest = await writeManifest(path.join(dir, 'manifest.json'), [{ source: `hf://${REPO}/${FILE}`, dest: `checkpoints/${FILE}` }]);
        const store = path.join(dir, 'store');
        const nodeDirs = Array.from({ length: n }, (_, i) => path.join(dir, `node${i}`));
        for (const d of nodeDirs) await mkdir(path.join(d, 'models'), { recursive: true });
        await hub.resetStats();
        log(`${n} node(s) on one store, ${(opts.sizeBytes / 1e6).toFixed(0)} MB at ${(opts.bytesPerSecond / 1e6).toFixed(1)} MB/s per connection`);
        const t0 = performance.now();
        const results = await Promise.all(nodeDirs.map((d) => runNode(d, manifest, store, hub.endpoint)));
        const seconds = (performance.now() - t0) / 1000;
        const served = await hub.served(added.sha256);
        const failed = results.filter((r) => r.code !== 0);
        const note = failed.length > 0 ? `${failed.length} node(s) failed: ${failed[0]?.stderr.trim().split('\n').slice(-1)[0] ?? ''}` : await checkPublished(store, nodeDirs, added.sha256, added.size);
        single ??= seconds;
        rows.push({ nodes: n, seconds, timeRatio: seconds / single, bytesRatio: served / added.size, ok: failed.length === 0 && note === '', note });
      } finally {
        await removeDir(dir);
      }
    }
  } finally {
    await hub.close();
    killAll();
  }
  return rows;
}

/** The blob hashes to its address, and every node published it (the same inode, by hard link). */
async function checkPublished(store: string, nodeDirs: readonly string[], sha: string, size: number): Promise<string> {
  const blob = path.join(store, 'blobs', 'sha256', sha.slice(0, 2), sha);
  if ((await fileSha256(blob)) !== sha) return 'store blob does not hash to its address';
  const b = await stat(blob);
  for (const d of nodeDirs) {
    const f = await stat(path.join(d, 'models', 'checkpoints', FILE)).catch(() => undefined);
    if (!f || f.size !== size) return `${path.basename(d)} did not publish the file`;
    if (f.ino !== b.ino && (await fileSha256(path.join(d, 'models', 'checkpoints', FILE))) !== sha) return `${path.basename(d)} published wrong bytes`;
  }
  return '';
}

export function renderSharedVolume(rows: readonly SharedVolumeRow[]): string {
  const lines = [
    '| nodes on one store | wall time | time vs 1 node (goal <= 1.2x) | origin bytes / blob (goal <= 1.1x) | result |',
    '| ---: | ---: | ---: | ---: | --- |',
  ];
  for (const r of rows) {
    const pass = r.ok && r.bytesRatio <= 1.1 && (r.nodes === 1 || r.timeRatio <= 1.2);
    lines.push(`| ${r.nodes} | ${r.seconds.toFixed(1)} s | ${r.timeRatio.toFixed(2)}x | ${r.bytesRatio.toFixed(3)}x | ${pass ? 'PASS' : `FAIL${r.note ? `: ${r.note}` : ''}`} |`);
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { 'size-mb': { type: 'string', default: '300' }, nodes: { type: 'string', default: '2,4,8' }, 'mbps-per-conn': { type: 'string', default: '2' } } });
  const rows = await sharedVolumeBench({
    sizeBytes: Math.round(Number(values['size-mb']) * 1e6),
    nodeCounts: values.nodes.split(',').map(Number),
    bytesPerSecond: Math.round(Number(values['mbps-per-conn']) * 1e6),
  });
  process.stdout.write(`${renderSharedVolume(rows)}\n`);
  return rows.every((r) => r.ok && r.bytesRatio <= 1.1 && (r.nodes === 1 || r.timeRatio <= 1.2)) ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
