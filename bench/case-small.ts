import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { SMALL_REPO, summarise, type BenchContext } from './context.js';
import { aria2List, resolveUrl } from './peers.js';
import { pacedGoal } from './report.js';
import type { Measured } from './rss.js';
import { workDir } from './setup.js';

const DEST = 'loras/bench-small';

/** Case 3: many small LFS files, modelsync (one manifest) against `aria2c -j16 -i list`. */
export async function smallFilesCase(ctx: BenchContext): Promise<void> {
  const hub = await ctx.hub();
  const files = await ctx.small();
  const total = files.reduce((a, f) => a + f.size, 0);
  const name = `${files.length} x ${(ctx.opts.smallSize / 1024).toFixed(0)} KiB files`;
  const entries = files.map((f) => ({ source: `hf://${SMALL_REPO}/${f.path}`, dest: `${DEST}/${path.basename(f.path)}` }));
  const ms: (Measured & { failed?: string })[] = [];
  const ar: (Measured & { failed?: string })[] = [];
  const viaModelsync = async (rep: number): Promise<void> => {
    ctx.log(`case 3: modelsync sync, ${files.length} entries (run ${rep + 1}/${ctx.opts.repeat})`);
    const { run, dirs } = await ctx.freshSync('small-modelsync', entries);
    const failed = run.ok ? await countCheck(path.join(dirs.models, DEST), files.length, total) : `exit ${run.code ?? run.signal}: ${run.stderr.slice(-300)}`;
    ms.push(failed === undefined ? run : { ...run, failed });
    await ctx.cleanup(dirs.dir);
  };
  const viaAria2 = async (rep: number): Promise<void> => {
    ctx.log(`case 3: aria2c -j16 -i list (run ${rep + 1}/${ctx.opts.repeat})`);
    const dir = await workDir('small-aria2c');
    const out = path.join(dir, 'out');
    await ctx.settle();
    const m = await aria2List(
      files.map((f) => ({ url: resolveUrl(hub.endpoint, SMALL_REPO, f.path), out: path.basename(f.path) })),
      out,
      dir,
    );
    const bad = m.code === 0 ? await countCheck(out, files.length, total) : `exit ${m.code ?? m.signal}: ${m.stderr.slice(-300)}`;
    ar.push(bad === undefined ? m : { ...m, failed: bad });
    await ctx.cleanup(dir);
  };
  // The order swaps every repeat, so that neither always runs right after the other's deletes.
  for (let rep = 0; rep < ctx.opts.repeat; rep++) {
    if (rep % 2 === 1 && ctx.aria2) await viaAria2(rep);
    await viaModelsync(rep);
    if (rep % 2 === 0 && ctx.aria2) await viaAria2(rep);
  }
  const msRow = summarise(3, name, 'modelsync sync (verified, fsynced)', total, ms, { isModelsync: true });
  const arRow = summarise(3, name, 'aria2c -j16 -i list', total, ar, ctx.aria2 ? {} : { note: 'skipped: aria2c not installed' });
  ctx.rows.push(msRow, arRow);
  ctx.goals.push(pacedGoal(3, 'small files: modelsync speed / aria2c -j16', msRow, arRow, 1.2));
}

async function countCheck(dir: string, count: number, bytes: number): Promise<string | undefined> {
  const names = await readdir(dir).catch(() => [] as string[]);
  let sum = 0;
  for (const n of names) sum += (await stat(path.join(dir, n))).size;
  return names.length === count && sum === bytes ? undefined : `${names.length} files / ${sum} bytes, expected ${count} / ${bytes}`;
}
