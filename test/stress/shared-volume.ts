/**
 * One shared volume, many nodes, over and over: each round adds a new model to the manifest and
 * starts N `modelsync sync` processes at once (own state and models dirs, one store) against a
 * paced CDN, then re-hashes every final path (every store blob, every published file of every
 * node). With --chaos a round may also SIGKILL the node holding the blob's lease mid-download
 * (and run it again after the others), or SIGSTOP it past the stale time and continue it after
 * the others finished.
 *
 *   npx tsx test/stress/shared-volume.ts [--rounds 20] [--nodes 4] [--size-mb 8] [--chaos] [--seed N]
 *
 * Prints a table: rounds x nodes x corrupt files (plus failed runs and bytes served per blob).
 * Self-contained: starts its own Hub stand-in. Needs `npm run build` first. Not run in CI.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { makeNode, sleep, startSync, writeManifest, type Finished, type NodeDirs, type RunningNode } from '../support/cli-nodes.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { makeSafetensors, sha256Hex, startHub } from '../support/hub.js';

export interface SharedVolumeStressOptions {
  readonly rounds: number;
  readonly nodes: number;
  readonly sizeBytes: number;
  readonly chaos: boolean;
  readonly seed?: number;
  readonly log?: (line: string) => void;
}

export interface SharedVolumeStressSummary {
  readonly rounds: number;
  readonly nodes: number;
  readonly chaos: boolean;
  /** Processes started (re-runs of killed nodes included). */
  readonly runs: number;
  readonly kills: number;
  readonly stops: number;
  /** "round: path: why" for every final path with wrong or partial bytes, after any round. */
  readonly corrupt: string[];
  /** Runs that exited non-zero without being killed. */
  readonly failures: string[];
  /** Bytes served by origin per blob, as a multiple of its size. */
  readonly servedRatios: number[];
}

const STALE_MS = 1500;
const TOKEN = 'hf_TESTSECRET_stress_shared';

function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function sharedVolumeStress(opts: SharedVolumeStressOptions): Promise<SharedVolumeStressSummary> {
  const log = opts.log ?? ((l: string) => void process.stderr.write(`${l}\n`));
  const seed = opts.seed ?? Date.now() % 100_000;
  const random = seeded(seed);
  const hub = await startHub();
  hub.tokens.valid.add(TOKEN);
  const root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-stress-shared-'));
  const store = path.join(root, 'store');
  const nodes: NodeDirs[] = [];
  for (let i = 0; i < opts.nodes; i++) nodes.push(await makeNode(root, `node${i}`));
  // About two seconds per download: long enough for the nodes to overlap and for chaos to land.
  const pace = Math.max(50_000, Math.round(opts.sizeBytes / 4 / 2));
  const models: { source: string; dest: string }[] = [];
  const expected: Record<string, string> = {};
  const corrupt: string[] = [];
  const failures: string[] = [];
  const servedRatios: number[] = [];
  let runs = 0;
  let kills = 0;
  let stops = 0;
  log(`shared-volume stress: seed ${seed}, ${opts.rounds} rounds x ${opts.nodes} nodes, ${(opts.sizeBytes / 2 ** 20).toFixed(0)} MiB per round${opts.chaos ? ', chaos' : ''}`);

  const sync = (n: NodeDirs, manifest: string): RunningNode => {
    runs++;
    return startSync(n, { manifest, storeDir: store, hub: hub.endpoint, args: ['--chunk-size', '512K', '--connections', '4'], env: { MODELSYNC_LEASE_STALE_MS: String(STALE_MS), HF_TOKEN: TOKEN } });
  };
  const failed = (round: number, n: NodeDirs, f: Finished): void => {
    const tail = (f.stdout + f.stderr).trim().split('\n').slice(-3).join(' | ');
    failures.push(`round ${round} ${n.name}: exit ${f.code ?? f.signal}: ${tail}`);
  };

  try {
    for (let round = 1; round <= opts.rounds; round++) {
      const content = makeSafetensors(opts.sizeBytes, seed * 1000 + round);
      const sha = sha256Hex(content);
      hub.addRepo({ id: `stress/r${round}`, files: [{ path: 'model.safetensors', content }] });
      hub.setFaults(sha, { bytesPerSecond: pace });
      const dest = `checkpoints/round-${round}.safetensors`;
      models.push({ source: `hf://stress/r${round}/model.safetensors`, dest });
      expected[dest] = sha;
      const manifest = await writeManifest(path.join(root, `manifest-${round}.json`), models);

      const chaos = opts.chaos ? (['none', 'kill', 'stop'] as const)[Math.floor(random() * 3)] : 'none';
      const running = nodes.map((n) => sync(n, manifest));
      let victim = -1;
      let note = '';
      if (chaos !== 'none') {
        // Aim at whoever holds the blob's lease, at a random point of its download.
        const pid = await holderPid(store, `sha256-${sha}`, 300 + Math.round(random() * 1500));
        victim = running.findIndex((r) => r.child.pid === pid);
        const v = running[victim];
        if (v && v.child.exitCode === null) {
          v.child.kill(chaos === 'kill' ? 'SIGKILL' : 'SIGSTOP');
          if (chaos === 'kill') kills++;
          else stops++;
          note = `${chaos === 'kill' ? 'killed' : 'stopped'} the holder, node${victim}`;
        }
      }
      const done = await Promise.all(running.map((r, i) => (i === victim && note !== '' && chaos === 'stop' ? undefined : r.done)));
      done.forEach((f, i) => {
        if (f && f.code !== 0 && !(i === victim && chaos === 'kill' && note !== '')) failed(round, nodes[i] as NodeDirs, f);
      });
      if (note !== '') {
        const v = running[victim] as RunningNode;
        if (chaos === 'stop') {
          await sleep(STALE_MS);
          v.child.kill('SIGCONT');
          const f = await v.done;
          if (f.code !== 0) failed(round, nodes[victim] as NodeDirs, f);
        } else {
          const f = await sync(nodes[victim] as NodeDirs, manifest).done;
          if (f.code !== 0) failed(round, nodes[victim] as NodeDirs, f);
        }
      }
      for (const n of nodes) {
        const report = await checkFinalPaths(n.modelsDir, expected, store);
        corrupt.push(...report.corrupt.map((c) => `round ${round}: ${c}`));
      }
      const ratio = (hub.stats.bytesServed.get(sha) ?? 0) / content.length;
      servedRatios.push(ratio);
      log(`round ${round}/${opts.rounds}: served ${ratio.toFixed(2)}x${note ? ` (${note})` : ''}; corrupt so far ${corrupt.length}, failures ${failures.length}`);
    }
  } finally {
    await hub.close();
    await rm(root, { recursive: true, force: true });
  }
  return { rounds: opts.rounds, nodes: opts.nodes, chaos: opts.chaos, runs, kills, stops, corrupt, failures, servedRatios };
}

/** The pid in the lease's owner file once the download has run for `afterMs`; undefined if it ended first. */
async function holderPid(store: string, key: string, afterMs: number): Promise<number | undefined> {
  const owner = path.join(store, 'leases', key, 'owner');
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    try {
      await readFile(owner, 'utf8');
      break;
    } catch {
      await sleep(20);
    }
  }
  await sleep(afterMs);
  try {
    return (JSON.parse(await readFile(owner, 'utf8')) as { pid?: number }).pid;
  } catch {
    return undefined;
  }
}

export function renderSharedVolume(s: SharedVolumeStressSummary): string {
  const mean = s.servedRatios.reduce((a, b) => a + b, 0) / Math.max(1, s.servedRatios.length);
  const max = Math.max(0, ...s.servedRatios);
  return [
    '| rounds | nodes | runs | kills | stops | corrupt files | failed runs | origin bytes / blob (mean, max) |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${s.rounds} | ${s.nodes} | ${s.runs} | ${s.kills} | ${s.stops} | ${s.corrupt.length} | ${s.failures.length} | ${mean.toFixed(2)}x, ${max.toFixed(2)}x |`,
    ...s.corrupt.map((c) => `- corrupt: ${c}`),
    ...s.failures.map((f) => `- failed: ${f}`),
  ].join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { rounds: { type: 'string', default: '20' }, nodes: { type: 'string', default: '4' }, 'size-mb': { type: 'string', default: '8' }, chaos: { type: 'boolean', default: false }, seed: { type: 'string' } },
  });
  const summary = await sharedVolumeStress({
    rounds: Number(values.rounds),
    nodes: Number(values.nodes),
    sizeBytes: Math.round(Number(values['size-mb']) * 2 ** 20),
    chaos: values.chaos,
    ...(values.seed === undefined ? {} : { seed: Number(values.seed) }),
  });
  process.stdout.write(`${renderSharedVolume(summary)}\n`);
  return summary.corrupt.length === 0 && summary.failures.length === 0 ? 0 : 1;
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
