import { stat } from 'node:fs/promises';
import path from 'node:path';
import { summarise, type BenchContext } from './context.js';
import { modelsync, syncDirs } from './modelsync.js';
import { mib } from './report.js';
import type { Measured } from './rss.js';
import { startHubChild } from './setup.js';

const RSS_LIMIT = 150 * 1024 * 1024;

/**
 * Case 7: memory stays flat. N large files over many connections at once; what matters is peak
 * RSS, which must not grow with file size or connection count. Runs on a Hub of its own, started
 * after the shared one is closed, so the stand-in holds only this case's files in memory.
 */
export async function flatCase(ctx: BenchContext): Promise<void> {
  const { flatFiles: n, flatSize, flatConnections: conns } = ctx.opts;
  await ctx.closeHub();
  ctx.log(`case 7: generating ${n} x ${mib(flatSize)} MiB on a fresh Hub stand-in...`);
  const hub = await startHubChild();
  try {
    const files = [];
    for (let i = 0; i < n; i++) files.push(await hub.addModel(`bench-org/flat-${i}`, 'model.safetensors', Math.max(0, flatSize - 400), 100 + i));
    const total = files.reduce((a, f) => a + f.size, 0);
    const entries = files.map((_, i) => ({ source: `hf://bench-org/flat-${i}/model.safetensors`, dest: `checkpoints/flat-${i}.safetensors` }));
    const runs: (Measured & { failed?: string })[] = [];
    for (let rep = 0; rep < ctx.opts.repeat; rep++) {
      ctx.log(`case 7: modelsync sync --connections ${conns}, ${n} x ${mib(flatSize)} MiB (run ${rep + 1}/${ctx.opts.repeat})`);
      const dirs = await syncDirs('flat-modelsync', entries);
      try {
        await ctx.settle();
        const r = await modelsync(dirs, hub.endpoint, { bin: ctx.opts.bin, env: ctx.opts.modelsyncEnv, flags: [...ctx.opts.modelsyncFlags, '--connections', String(conns)] });
        let failed = r.ok ? undefined : `exit ${r.code ?? r.signal}: ${r.stderr.slice(-300)}`;
        for (let i = 0; i < n && failed === undefined; i++) {
          const s = await stat(path.join(dirs.models, 'checkpoints', `flat-${i}.safetensors`)).catch(() => undefined);
          if (s?.size !== files[i]?.size) failed = `flat-${i} is ${s?.size ?? 'missing'}`;
        }
        runs.push(failed === undefined ? r : { ...r, failed });
      } finally {
        await ctx.cleanup(dirs.dir);
      }
    }
    const row = summarise(7, `${n} x ${mib(flatSize)} MiB over ${conns} connections`, 'modelsync sync', total, runs, { isModelsync: true });
    ctx.rows.push(row);
    ctx.goals.push({
      caseId: 7,
      what: `peak RSS moving ${n} x ${mib(flatSize)} MiB over ${conns} connections`,
      measured: row.peakRssBytes === undefined ? 'n/a' : `${mib(row.peakRssBytes)} MiB`,
      target: `< ${mib(RSS_LIMIT)} MiB`,
      pass: row.peakRssBytes === undefined || row.seconds === undefined ? undefined : row.peakRssBytes < RSS_LIMIT,
    });
  } finally {
    await hub.close();
  }
}
