import path from 'node:path';
import { BIG_FILE, MID_REPO, type BenchContext } from './context.js';
import { modelsync, syncDirs } from './modelsync.js';
import { median } from './report.js';
import { spawnMeasured } from './rss.js';

/** One entry's start-up takes a fraction of a second: a few more runs than --repeat make the median steadier. */
const MIN_RUNS = 5;
/** Issue 15's goal, ms. */
const GOAL_MS = 100;

/**
 * Case 12: process start to the first CDN byte, one hf:// entry on fresh dirs, the Hub lookups
 * included: the bench's clock when it spawns modelsync (bare, as a user runs it) against the
 * stand-in's clock when the CDN begins its first answer (both Date.now() on this machine). A bare
 * `node -e 0` in the same round says how much of it is Node's own start-up.
 */
export async function firstByteCase(ctx: BenchContext): Promise<void> {
  const hub = await ctx.hub();
  const mid = await ctx.mid();
  const firsts: number[] = [];
  const nodes: number[] = [];
  const failures: string[] = [];
  const reps = Math.max(ctx.opts.repeat, MIN_RUNS);
  for (let rep = 0; rep < reps; rep++) {
    ctx.log(`case 12: process start to first CDN byte (run ${rep + 1}/${reps})`);
    const dirs = await syncDirs('first-byte', [{ source: `hf://${MID_REPO}/${mid.path}`, dest: `checkpoints/${BIG_FILE}` }]);
    try {
      await ctx.settle();
      nodes.push((await spawnMeasured(process.execPath, ['-e', '0'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } })).wallMs);
      await hub.resetStats();
      const t0 = Date.now();
      const run = await modelsync(dirs, hub.endpoint, { bin: ctx.opts.bin, env: ctx.opts.modelsyncEnv, flags: ctx.opts.modelsyncFlags, bare: true });
      const at = await hub.firstCdnAt();
      if (!run.ok || at === null) failures.push(`exit ${run.code ?? run.signal}${at === null ? ', no CDN request' : ''}`);
      else firsts.push(at - t0);
    } finally {
      await ctx.cleanup(dirs.dir);
    }
  }
  const spread = (xs: readonly number[]): string => `${median(xs).toFixed(0)} ms (${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)})`;
  const what = 'process start to first CDN byte, one entry, Hub lookups included';
  if (firsts.length === 0) {
    ctx.goals.push({ caseId: 12, what, measured: `failed: ${failures.join('; ')}`, target: `<= ${GOAL_MS} ms`, pass: false });
    return;
  }
  ctx.goals.push({
    caseId: 12,
    what,
    measured: `${spread(firsts)}; a bare \`node -e 0\` ${spread(nodes)}${failures.length > 0 ? `; ${failures.length} failed` : ''}`,
    target: `<= ${GOAL_MS} ms`,
    pass: failures.length === 0 && median(firsts) <= GOAL_MS,
  });
  ctx.log(`case 12: first CDN byte after ${spread(firsts)} (${path.basename(mid.path)})`);
}
