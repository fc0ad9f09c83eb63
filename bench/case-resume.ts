import { BIG_FILE, BIG_REPO, summarise, type BenchContext } from './context.js';
import { modelsync, syncDirs } from './modelsync.js';
import { median, type Row } from './report.js';

/**
 * The killed run leaves its lease behind. A holder that died on this host is taken over at once;
 * should that check not apply, the stale period is waited out, and 2 s instead of the default 60 s
 * keeps the case short. It changes when the resume starts, not how many bytes it fetches.
 */
const LEASE_STALE_MS = '2000';

/**
 * Case 5: SIGKILL modelsync once the CDN has served about half the file, run it again, and
 * count every byte the CDN served for that blob across both runs (Hub stats, per sha256).
 */
export async function resumeCase(ctx: BenchContext): Promise<void> {
  const hub = await ctx.hub();
  const big = await ctx.big();
  const ratios: number[] = [];
  const rows: Row[] = [];
  const killedAt: number[] = [];
  const resumeRuns = [];
  for (let rep = 0; rep < ctx.opts.repeat; rep++) {
    ctx.log(`case 5: SIGKILL at ~50% then resume (run ${rep + 1}/${ctx.opts.repeat})`);
    const dirs = await syncDirs('resume-modelsync', [{ source: `hf://${BIG_REPO}/${BIG_FILE}`, dest: `checkpoints/${BIG_FILE}` }]);
    try {
      await hub.resetStats();
      await ctx.settle();
      const env = { ...ctx.opts.modelsyncEnv, MODELSYNC_LEASE_STALE_MS: LEASE_STALE_MS };
      let servedAtKill = 0;
      const first = await modelsync(dirs, hub.endpoint, {
        bin: ctx.opts.bin,
        flags: ctx.opts.modelsyncFlags,
        env,
        onPoll: async (_pid, kill) => {
          const served = await hub.served(big.sha256);
          if (served >= big.size / 2 && servedAtKill === 0) {
            servedAtKill = served;
            kill();
          }
        },
      });
      if (first.signal !== 'SIGKILL') ctx.log(`case 5: the first run was not killed (exit ${first.code}); the file is too small to catch at 50%`);
      killedAt.push(servedAtKill / big.size);
      const second = await modelsync(dirs, hub.endpoint, { bin: ctx.opts.bin, flags: ctx.opts.modelsyncFlags, env });
      const total = await hub.served(big.sha256);
      resumeRuns.push(second.ok ? second : { ...second, failed: `exit ${second.code ?? second.signal}: ${second.stderr.slice(-300)}` });
      if (second.ok) ratios.push(total / big.size);
    } finally {
      await ctx.cleanup(dirs.dir);
    }
  }
  const all = ratios.map((r) => r.toFixed(3)).join(', ');
  const ratio = ratios.length === 0 ? undefined : median(ratios);
  const at = killedAt.map((k) => `${(k * 100).toFixed(0)}%`).join(', ');
  rows.push(
    summarise(5, 'SIGKILL at ~50%, then resume', 'modelsync sync (resume run)', 0, resumeRuns, {
      isModelsync: true,
      note: `killed when the CDN had served ${at}; bytes served in total / file size = ${ratios.length > 1 ? `${all} (median ${ratio?.toFixed(3)})` : all || 'n/a'}; MODELSYNC_LEASE_STALE_MS=${LEASE_STALE_MS}`,
    }),
  );
  ctx.rows.push(...rows);
  ctx.goals.push({
    caseId: 5,
    what: 'bytes fetched over kill + resume / file size',
    measured: ratio === undefined ? 'n/a' : `${ratio.toFixed(3)}x${ratios.length > 1 ? ` (median; worst ${Math.max(...ratios).toFixed(3)}x)` : ''}`,
    target: '<= 1.25x',
    pass: ratio === undefined ? undefined : ratio <= 1.25,
  });
}
