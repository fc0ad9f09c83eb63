import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { BIG_FILE, BIG_REPO, checkOutput, summarise, type BenchContext } from './context.js';
import type { AddedFile } from './hub-server.js';
import { aria2Split, curl, curlVerified, hfClient, resolveUrl } from './peers.js';
import { ratioGoal, type Row } from './report.js';
import type { Measured } from './rss.js';
import { workDir } from './setup.js';

type Tool = 'modelsync' | 'curl' | 'aria2c' | 'hf' | 'curl-verified';

const LABEL: Record<Tool, string> = {
  modelsync: 'modelsync sync (verified, fsynced)',
  curl: 'curl -L -o',
  aria2c: 'aria2c -x16 -s16',
  hf: '@huggingface/hub downloadFile -> file',
  'curl-verified': 'curl -L -o, then sha256sum -c and sync FILE',
};

/**
 * Cases 1 and 2: one LFS file to disk, modelsync against each peer, each on a fresh dir. The
 * order of tools rotates between repeats so that none always runs on a cooler machine.
 */
export async function oneFileCase(ctx: BenchContext, caseId: 1 | 2): Promise<void> {
  const paced = caseId === 2;
  const tools: Tool[] = paced ? ['modelsync', 'aria2c', 'curl'] : ['modelsync', 'curl', 'aria2c', 'hf', 'curl-verified'];
  const name = paced ? `1 file, CDN paced ${(ctx.opts.pace / 1e6).toFixed(0)} MB/s per connection` : '1 file to disk';
  const hub = await ctx.hub();
  const big = await ctx.big();
  const url = resolveUrl(hub.endpoint, BIG_REPO, BIG_FILE);
  const runs = new Map<Tool, Run[]>(tools.map((t) => [t, []]));
  if (paced) await hub.setFaults(big.sha256, { bytesPerSecond: ctx.opts.pace });
  try {
    for (let rep = 0; rep < ctx.opts.repeat; rep++) {
      const order = tools.map((_, i) => tools[(i + rep) % tools.length] as Tool);
      for (const tool of order) {
        if (tool === 'aria2c' && !ctx.aria2) continue;
        ctx.log(`case ${caseId}: ${LABEL[tool]} (run ${rep + 1}/${ctx.opts.repeat})`);
        const serverBefore = hub.cpuSeconds();
        const m = await runTool(ctx, tool, url, big, caseId === 1 && rep === ctx.opts.repeat - 1);
        runs.get(tool)?.push({ ...m, serverCpuSeconds: hub.cpuSeconds() - serverBefore });
      }
    }
  } finally {
    if (paced) await hub.clearFaults();
  }
  const rows = new Map<Tool, Row>();
  for (const tool of tools) {
    const rs = runs.get(tool) ?? [];
    const skipped = tool === 'aria2c' && !ctx.aria2;
    const row = summarise(caseId, name, LABEL[tool], big.size, rs, {
      isModelsync: tool === 'modelsync',
      ...(skipped ? { note: 'skipped: aria2c not installed' } : {}),
      // sh's own RSS is all a poll of the script's pid would see.
      ...(tool === 'curl-verified' ? { peakRssBytes: undefined, note: 'context, not a goal: what a script needs for the same guarantees' } : {}),
    });
    rows.set(tool, row);
    ctx.rows.push(row);
  }
  const ms = rows.get('modelsync');
  // Case 4 compares against the cold time: the median, like every other number here.
  if (caseId === 1 && ctx.cold && ms?.seconds !== undefined) ctx.cold.seconds = ms.seconds;
  const ratio = (t: Tool): number | undefined => {
    const p = rows.get(t);
    return ms?.seconds === undefined || p?.seconds === undefined ? undefined : p.seconds / ms.seconds;
  };
  if (paced) {
    ctx.goals.push(ratioGoal(2, 'paced: modelsync speed / aria2c -x16', ratio('aria2c'), 0.9));
  } else {
    ctx.goals.push({ ...ratioGoal(1, 'modelsync speed / curl', ratio('curl'), 1.0), ...cpuFloor(ms, rows.get('curl')) });
    ctx.goals.push({ ...ratioGoal(1, 'modelsync speed / @huggingface/hub', ratio('hf'), 2.0), ...verifiedFloor(rows.get('curl'), rows.get('hf'), big.size) });
  }
}

type Run = Measured & { failed?: string; serverCpuSeconds?: number };

/**
 * The stand-in runs on the same cores as the tool: however well a tool spreads its work, it
 * cannot finish before its CPU time and the stand-in's, divided by the cores, have passed.
 * Printed with case 1's goal, so a miss shows whether it is the code or the machine.
 */
function cpuFloor(ms: Row | undefined, peer: Row | undefined): { note: string } | undefined {
  if (ms?.cpuSeconds === undefined || ms.serverCpuSeconds === undefined || peer?.seconds === undefined) return undefined;
  const cores = availableParallelism();
  const need = ms.cpuSeconds + ms.serverCpuSeconds;
  const floor = need / cores;
  return {
    note:
      `CPU floor: modelsync used ${ms.cpuSeconds.toFixed(2)} CPU-s and the stand-in serving it ${ms.serverCpuSeconds.toFixed(2)}; ` +
      `on ${cores} CPUs no schedule of that work ends before ${floor.toFixed(2)} s, ` +
      `${floor <= peer.seconds ? 'within' : 'beyond'} curl's ${peer.seconds.toFixed(2)} s (curl used ${peer.cpuSeconds?.toFixed(2) ?? 'n/a'} CPU-s). ` +
      `modelsync's own time is ${(ms.seconds ?? 0).toFixed(2)} s.`,
  };
}

/**
 * The least CPU any verifying downloader needs here: curl's (receiving and writing the bytes),
 * the stand-in's serving curl, and SHA-256 over the bytes (measured now, in this process). Spread
 * perfectly over the cores, that is the shortest time a verified download can take on this
 * machine, whatever its code: when it is longer than the goal allows, the goal is the machine's.
 */
function verifiedFloor(curlRow: Row | undefined, peer: Row | undefined, size: number): { note: string } | undefined {
  if (curlRow?.cpuSeconds === undefined || curlRow.serverCpuSeconds === undefined || peer?.seconds === undefined) return undefined;
  const sha = sha256CpuSeconds(size);
  const cores = availableParallelism();
  const floor = (curlRow.cpuSeconds + curlRow.serverCpuSeconds + sha) / cores;
  const goal = peer.seconds / 2;
  return {
    note:
      `2x needs ${goal.toFixed(2)} s. Verified floor on this machine: curl's ${curlRow.cpuSeconds.toFixed(2)} CPU-s + the stand-in's ${curlRow.serverCpuSeconds.toFixed(2)} ` +
      `+ SHA-256 of the file ${sha.toFixed(2)} (hashed in memory here), over ${cores} CPUs = ${floor.toFixed(2)} s: ` +
      `${floor <= goal ? "reachable only by a tool that spends nothing beyond curl's work and the hash (no start-up, no Hub lookup, no fsync), spread perfectly over the cores" : 'no verifying tool can meet the goal on this machine'}.`,
  };
}

/** CPU seconds to SHA-256 `size` bytes in memory, on this machine (the hash alone, no I/O). */
function sha256CpuSeconds(size: number): number {
  const block = Buffer.alloc(1 << 20, 0x5a);
  const before = process.cpuUsage();
  const h = createHash('sha256');
  for (let left = size; left > 0; left -= block.length) h.update(left >= block.length ? block : block.subarray(0, left));
  h.digest();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1e6;
}

async function runTool(ctx: BenchContext, tool: Tool, url: string, big: AddedFile, keepForWarm: boolean): Promise<Run> {
  const size = big.size;
  if (tool === 'modelsync') {
    const { run, dirs } = await ctx.freshSync('one-file-modelsync', [{ source: `hf://${BIG_REPO}/${BIG_FILE}`, dest: `checkpoints/${BIG_FILE}` }]);
    const failed = run.ok ? await checkOutput(run, path.join(dirs.models, 'checkpoints', BIG_FILE), size) : `exit ${run.code ?? run.signal}`;
    if (keepForWarm && failed === undefined) {
      if (ctx.cold) await ctx.cleanup(ctx.cold.dirs.dir);
      ctx.cold = { dirs, seconds: run.wallMs / 1000 };
    } else await ctx.cleanup(dirs.dir);
    return failed === undefined ? run : { ...run, failed };
  }
  const dir = await workDir(`one-file-${tool}`);
  const out = path.join(dir, BIG_FILE);
  try {
    await ctx.settle();
    const hub = await ctx.hub();
    const m =
      tool === 'curl'
        ? await curl(url, out, dir)
        : tool === 'curl-verified'
          ? await curlVerified(url, out, dir, big.sha256)
          : tool === 'aria2c'
            ? await aria2Split(url, out, dir)
            : await hfClient(hub.endpoint, BIG_REPO, BIG_FILE, out, dir);
    const failed = await checkOutput(m, out, size);
    return failed === undefined ? m : { ...m, failed };
  } finally {
    await ctx.cleanup(dir);
  }
}
