import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { BenchOptions } from './args.js';
import type { AddedFile } from './hub-server.js';
import { modelsync, syncDirs, type SyncDirs, type SyncRun } from './modelsync.js';
import { median, type Goal, type Row } from './report.js';
import type { Measured } from './rss.js';
import { removeDir, startHubChild, type HubChild } from './setup.js';

const run = promisify(execFile);

export const BIG_REPO = 'bench-org/big-model';
export const BIG_FILE = 'model.safetensors';
export const SMALL_REPO = 'bench-org/many-small';
export const SMALL_DIR = 'parts';
export const MID_REPO = 'bench-org/mid-model';
export const PACK_REPO = 'bench-org/lora-pack';
export const PACK_DIR = 'loras';

/** What the cases share: options, the Hub child and its content, and the results so far. */
export class BenchContext {
  readonly rows: Row[] = [];
  readonly goals: Goal[] = [];
  readonly notes: string[] = [];
  /** Case 1's last modelsync install and its cold time: case 4 re-syncs it. */
  cold: { dirs: SyncDirs; seconds: number } | undefined;
  private hubP: Promise<HubChild> | undefined;
  private bigP: Promise<AddedFile> | undefined;
  private smallP: Promise<AddedFile[]> | undefined;
  private midP: Promise<AddedFile> | undefined;
  private packP: Promise<AddedFile[]> | undefined;

  constructor(
    readonly opts: BenchOptions,
    readonly aria2: boolean,
    readonly log: (s: string) => void,
  ) {}

  hub(): Promise<HubChild> {
    this.hubP ??= startHubChild();
    return this.hubP;
  }

  /** The single LFS file of cases 1, 2, 4, 5 (payload sized so the file is about --size). */
  big(): Promise<AddedFile> {
    this.bigP ??= this.hub().then((h) => {
      this.log(`generating the ${(this.opts.size / 2 ** 20).toFixed(0)} MiB model on the Hub stand-in...`);
      return h.addModel(BIG_REPO, BIG_FILE, Math.max(0, this.opts.size - 400), 1);
    });
    return this.bigP;
  }

  /** The paced file of cases 8, 9 and 12 (--mid-size, 200 MB). */
  mid(): Promise<AddedFile> {
    this.midP ??= this.hub().then((h) => {
      this.log(`generating the ${(this.opts.midSize / 1e6).toFixed(0)} MB model on the Hub stand-in...`);
      return h.addModel(MID_REPO, BIG_FILE, Math.max(0, this.opts.midSize - 400), 2);
    });
    return this.midP;
  }

  /** Case 11's LoRA pack: --pack-files files of --pack-size. */
  pack(): Promise<AddedFile[]> {
    this.packP ??= this.hub().then((h) => {
      this.log(`generating ${this.opts.packFiles} x ${(this.opts.packSize / 1e6).toFixed(0)} MB files on the Hub stand-in...`);
      return h.addMany(PACK_REPO, PACK_DIR, this.opts.packFiles, Math.max(0, this.opts.packSize - 200), 5000);
    });
    return this.packP;
  }

  small(): Promise<AddedFile[]> {
    this.smallP ??= this.hub().then((h) => {
      this.log(`generating ${this.opts.smallFiles} x ${(this.opts.smallSize / 1024).toFixed(0)} KiB files on the Hub stand-in...`);
      return h.addMany(SMALL_REPO, SMALL_DIR, this.opts.smallFiles, Math.max(0, this.opts.smallSize - 200), 1000);
    });
    return this.smallP;
  }

  /** Close the shared Hub (case 7 starts its own, so the 8 GB of case 7 never share memory with it). */
  async closeHub(): Promise<void> {
    const h = this.hubP;
    this.hubP = this.bigP = this.smallP = this.midP = this.packP = undefined;
    if (h) await (await h).close();
  }

  /** Flush earlier runs' dirty pages so one tool's writeback does not land on the next one's clock. */
  async settle(): Promise<void> {
    await run('sync');
  }

  async cleanup(dir: string): Promise<void> {
    if (!this.opts.keep) await removeDir(dir);
  }

  /** A modelsync run on fresh dirs; the caller removes them (ctx.cleanup). */
  async freshSync(label: string, entries: Parameters<typeof syncDirs>[1], flags: readonly string[] = []): Promise<{ run: SyncRun; dirs: SyncDirs }> {
    const hub = await this.hub();
    const dirs = await syncDirs(label, entries);
    await this.settle();
    const r = await modelsync(dirs, hub.endpoint, { bin: this.opts.bin, env: this.opts.modelsyncEnv, flags: [...this.opts.modelsyncFlags, ...flags] });
    if (!r.ok) this.log(`modelsync failed (exit ${r.code ?? r.signal}): ${r.stderr.slice(-2000)}${r.stdout.slice(-2000)}`);
    return { run: r, dirs };
  }
}

/** Summarise repeated runs: median time of the successful ones, the largest peak RSS. */
export function summarise(
  caseId: number,
  caseName: string,
  tool: string,
  bytes: number,
  runs: readonly (Measured & { failed?: string; serverCpuSeconds?: number })[],
  extra: Partial<Row> = {},
): Row {
  const good = runs.filter((r) => r.failed === undefined);
  const failed = runs.find((r) => r.failed !== undefined)?.failed;
  const note = [extra.note, failed === undefined ? undefined : `FAILED: ${failed}`, runs.length > 1 ? `median of ${good.length}` : undefined].filter(Boolean).join('; ');
  return {
    caseId,
    caseName,
    tool,
    bytes,
    seconds: good.length === 0 ? undefined : median(good.map((r) => r.wallMs / 1000)),
    minSeconds: good.length === 0 ? undefined : Math.min(...good.map((r) => r.wallMs / 1000)),
    maxSeconds: good.length === 0 ? undefined : Math.max(...good.map((r) => r.wallMs / 1000)),
    cpuSeconds: good.length === 0 ? undefined : median(good.map((r) => r.cpuSeconds)),
    serverCpuSeconds: good.some((r) => r.serverCpuSeconds === undefined) || good.length === 0 ? undefined : median(good.map((r) => r.serverCpuSeconds ?? 0)),
    peakRssBytes: runs.length === 0 ? undefined : Math.max(...runs.map((r) => r.peakRssBytes)),
    ...extra,
    note,
  };
}

/** Why a peer's run does not count: a non-zero exit or an output of the wrong size. */
export async function checkOutput(m: Measured, file: string, size: number): Promise<string | undefined> {
  if (m.code !== 0) return `exit ${m.code ?? m.signal}: ${m.stderr.trim().split('\n').slice(-2).join(' ').slice(0, 200)}`;
  const got = await stat(file).then(
    (s) => s.size,
    () => -1,
  );
  return got === size ? undefined : `output is ${got} bytes, expected ${size}`;
}
