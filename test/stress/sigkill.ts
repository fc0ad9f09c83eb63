/**
 * SIGKILL at random points of a large download, over and over, checking after every kill that
 * nothing partial or wrong sits at a final path (a store blob or a published dest). Each run
 * resumes what the killed one left; a run that gets to the end starts the next from empty.
 * Used by `npm run stress` (50 rounds) and by test/hostile/process.test.ts (a few rounds).
 */
import { spawn } from 'node:child_process';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { ALL_FAKE_SECRETS, BIN, FAKE_HF_TOKEN, leakedSecrets, sandbox, type Sandbox } from '../support/cli.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { startHub } from '../support/hub.js';
import { addModel, sha256 } from '../support/models.js';
import { secretsInFiles } from '../support/scan-secrets.js';

export interface SigkillOptions {
  readonly rounds: number;
  /** Payload bytes of the large model. */
  readonly sizeBytes: number;
  /** Per-connection CDN rate, so that a download lasts long enough to be hit at random points. */
  readonly bytesPerSecond?: number;
  readonly seed?: number;
  readonly log?: (line: string) => void;
  /** The CLI to run (default: the repo's bin/modelsync.js). */
  readonly bin?: string;
}

export interface SigkillSummary {
  readonly seed: number;
  /** Processes started, the calibration and the final run included. */
  readonly runs: number;
  readonly kills: number;
  /** Runs that finished before their kill came. */
  readonly completions: number;
  /** Runs that went on from bytes a killed run had journaled. */
  readonly resumes: number;
  /** Every final path found with wrong or partial bytes, after any run. */
  readonly corrupt: string[];
  /** Fake secrets found in any output, log, state DB or store file. */
  readonly leaks: string[];
  /** Runs that failed without being killed (any is a bug). */
  readonly failures: string[];
  /** The last, unkilled run left every entry published and verified, and no temp behind. */
  readonly finalOk: boolean;
}

const FLAGS = ['--chunk-size', '256K', '--connections', '4'];
/** A killed run's lease is left behind; a short stale period lets the next run take it over. */
const STALE_MS = 500;

/** mulberry32: a seeded generator, so that a failing sequence of kill points can be replayed. */
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

interface Run {
  readonly code: number | null;
  readonly killed: boolean;
  readonly ms: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** One `modelsync sync`, SIGKILLed after `killAfterMs` unless it exits first. */
function runOnce(bin: string, env: Record<string, string>, killAfterMs: number | undefined): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [bin, 'sync', ...FLAGS], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(
      () => {
        killed = true;
        child.kill('SIGKILL');
      },
      killAfterMs ?? 120_000,
    );
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, killed, ms: Date.now() - started, stdout, stderr });
    });
  });
}

async function reset(sb: Sandbox): Promise<void> {
  await rm(sb.models, { recursive: true, force: true });
  await mkdir(sb.models);
  await rm(sb.state, { recursive: true, force: true });
}

export async function sigkillStress(opts: SigkillOptions): Promise<SigkillSummary> {
  const seed = opts.seed ?? Date.now() % 2 ** 31;
  const random = seeded(seed);
  const log = opts.log ?? (() => undefined);
  const bin = opts.bin ?? BIN;
  const hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  const sb = await sandbox(hub.endpoint);
  const outputs: string[] = [];
  const corrupt: string[] = [];
  const failures: string[] = [];
  let runs = 0;
  let kills = 0;
  let completions = 0;
  let resumes = 0;
  try {
    // A private repo, so that HF_TOKEN is really sent (and must still never be written anywhere).
    const big = addModel(hub, opts.sizeBytes, { private: true, extra: [{ path: 'config.json', content: Buffer.from('{"layers": 2}\n'), lfs: false }] });
    const small = addModel(hub, 300_000);
    hub.setFaults(big.sha256, { bytesPerSecond: opts.bytesPerSecond ?? 2_000_000 });
    await sb.writeManifest([
      { source: big.uri, dest: 'checkpoints/big.safetensors' },
      { source: `hf://${big.repo}/config.json`, dest: 'configs/big.json' },
      { source: small.uri, dest: 'loras/small.safetensors' },
    ]);
    const expected = { 'checkpoints/big.safetensors': big.sha256, 'configs/big.json': sha256(Buffer.from('{"layers": 2}\n')), 'loras/small.safetensors': small.sha256 };
    const env = sb.env({ MODELSYNC_LEASE_STALE_MS: String(STALE_MS), MODELSYNC_LOG_LEVEL: 'debug' });

    const check = async (label: string): Promise<void> => {
      const report = await checkFinalPaths(sb.models, expected);
      for (const c of report.corrupt) corrupt.push(`${label}: ${c}`);
    };
    const record = (r: Run): void => {
      runs++;
      outputs.push(r.stdout, r.stderr);
      if (/resuming partial download/.test(r.stderr)) resumes++;
    };

    const calib = await runOnce(bin, env, undefined);
    record(calib);
    if (calib.code !== 0) throw new Error(`calibration sync failed (exit ${calib.code}):\n${calib.stdout}${calib.stderr.slice(-2000)}`);
    await check('calibration');
    // Kill points span the whole life of a run, startup and a takeover wait included.
    const span = calib.ms + STALE_MS;
    log(`sigkill: seed ${seed}, a clean sync takes ${calib.ms} ms; killing at random within ${span} ms`);
    await reset(sb);

    for (let round = 1; round <= opts.rounds; round++) {
      const at = Math.round(random() * span);
      const r = await runOnce(bin, env, at);
      record(r);
      if (r.killed) kills++;
      else if (r.code === 0) completions++;
      else failures.push(`round ${round}: exit ${r.code} without a kill: ${`${r.stdout}${r.stderr}`.trim().split('\n').slice(-4).join(' | ')}`);
      await check(`round ${round} (${r.killed ? `killed at ${at} ms` : `exit ${r.code}`})`);
      log(`sigkill: round ${round}/${opts.rounds}: ${r.killed ? `killed at ${at} ms` : `exited ${r.code} after ${r.ms} ms`}; corrupt so far ${corrupt.length}`);
      if (!r.killed && r.code === 0) await reset(sb);
    }

    const last = await runOnce(bin, env, undefined);
    record(last);
    await check('final run');
    const report = await checkFinalPaths(sb.models, expected);
    const leftovers = await readdir(path.join(sb.models, '.modelsync-store', 'tmp')).catch(() => [] as string[]);
    const finalOk = last.code === 0 && report.published === Object.keys(expected).length && report.corrupt.length === 0 && leftovers.length === 0;
    if (!finalOk) failures.push(`final run: exit ${last.code}, ${report.published} published, temps left: ${leftovers.join(', ')}\n${last.stdout}`);

    const leaks = [...leakedSecrets(...outputs).map((s) => `output: ${s}`), ...(await secretsInFiles([sb.state, sb.models], ALL_FAKE_SECRETS))];
    return { seed, runs, kills, completions, resumes, corrupt, leaks, failures, finalOk };
  } finally {
    await hub.close();
    await sb.cleanup();
  }
}
