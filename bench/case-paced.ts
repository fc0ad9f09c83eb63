import { stat } from 'node:fs/promises';
import path from 'node:path';
import { BIG_FILE, BIG_REPO, MID_REPO, PACK_REPO, summarise, type BenchContext } from './context.js';
import type { AddedFile } from './hub-server.js';
import { aria2List, aria2Split, resolveUrl } from './peers.js';
import { pacedGoal } from './report.js';
import type { Measured } from './rss.js';
import { workDir } from './setup.js';

export type PacedCase = 2 | 8 | 9 | 10 | 11;

interface Spec {
  readonly name: string;
  readonly repo: string;
  readonly files: readonly AddedFile[];
  readonly ttfbMs: number;
  /** The goal: modelsync's speed over aria2c's, at least. */
  readonly goal: number;
  readonly peer: string;
}

type Run = Measured & { failed?: string };

/**
 * Cases 2 and 8-11 (issue 15): the CDN paces every connection (--pace, 25 MB/s), as real CDNs
 * cap each connection far below the link; 9 and 10 add a time to first byte to every Hub and CDN
 * answer (--ttfb, 30 ms). modelsync against aria2c with the flags ComfyUI-Manager's users run it
 * with, in the same run, the order swapped every repeat.
 */
export async function pacedCase(ctx: BenchContext, caseId: PacedCase): Promise<void> {
  const spec = await specFor(ctx, caseId);
  const hub = await ctx.hub();
  const total = spec.files.reduce((a, f) => a + f.size, 0);
  const runs = { modelsync: [] as Run[], aria2c: [] as Run[] };
  for (const f of spec.files) await hub.setFaults(f.sha256, { bytesPerSecond: ctx.opts.pace });
  await hub.setTtfb(spec.ttfbMs);
  try {
    for (let rep = 0; rep < ctx.opts.repeat; rep++) {
      const order: ('modelsync' | 'aria2c')[] = rep % 2 === 0 ? ['modelsync', 'aria2c'] : ['aria2c', 'modelsync'];
      for (const tool of order) {
        if (tool === 'aria2c' && !ctx.aria2) continue;
        ctx.log(`case ${caseId}: ${tool === 'modelsync' ? 'modelsync sync' : spec.peer} (run ${rep + 1}/${ctx.opts.repeat})`);
        runs[tool].push(tool === 'modelsync' ? await viaModelsync(ctx, spec) : await viaAria2(ctx, spec));
      }
    }
  } finally {
    await hub.setTtfb(0);
    await hub.clearFaults();
  }
  const ms = summarise(caseId, spec.name, 'modelsync sync (verified, fsynced)', total, runs.modelsync, { isModelsync: true });
  const ar = summarise(caseId, spec.name, spec.peer, total, runs.aria2c, ctx.aria2 ? {} : { note: 'skipped: aria2c not installed' });
  ctx.rows.push(ms, ar);
  ctx.goals.push(pacedGoal(caseId, `${spec.name}: modelsync speed / ${spec.peer}`, ms, ar, spec.goal));
}

async function specFor(ctx: BenchContext, caseId: PacedCase): Promise<Spec> {
  const pace = `${(ctx.opts.pace / 1e6).toFixed(0)} MB/s per connection`;
  const ttfb = `, ${ctx.opts.ttfbMs} ms TTFB`;
  const splitPeer = 'aria2c -x16 -s16 -k1M';
  const mb = (n: number): string => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(0)} GiB` : `${(n / 1e6).toFixed(0)} MB`);
  switch (caseId) {
    case 2:
      return { name: `${mb(ctx.opts.size)}, ${pace}`, repo: BIG_REPO, files: [await ctx.big()], ttfbMs: 0, goal: 1.3, peer: splitPeer };
    case 10:
      return { name: `${mb(ctx.opts.size)}, ${pace}${ttfb}`, repo: BIG_REPO, files: [await ctx.big()], ttfbMs: ctx.opts.ttfbMs, goal: 1.3, peer: splitPeer };
    case 8:
      return { name: `${mb(ctx.opts.midSize)}, ${pace}`, repo: MID_REPO, files: [await ctx.mid()], ttfbMs: 0, goal: 1.2, peer: splitPeer };
    case 9:
      return { name: `${mb(ctx.opts.midSize)}, ${pace}${ttfb}`, repo: MID_REPO, files: [await ctx.mid()], ttfbMs: ctx.opts.ttfbMs, goal: 1.2, peer: splitPeer };
    case 11: {
      const files = await ctx.pack();
      return { name: `LoRA pack ${files.length} x ${mb(ctx.opts.packSize)}, ${pace}`, repo: PACK_REPO, files, ttfbMs: 0, goal: 1.3, peer: `aria2c -j${files.length} -x16 -s16 -i list` };
    }
  }
}

/** Dest of a file in the models dir; the single-file cases keep the name the other cases use. */
function destOf(spec: Spec, f: AddedFile): string {
  return spec.files.length === 1 ? `checkpoints/${BIG_FILE}` : `loras/${path.basename(f.path)}`;
}

async function viaModelsync(ctx: BenchContext, spec: Spec): Promise<Run> {
  const entries = spec.files.map((f) => ({ source: `hf://${spec.repo}/${f.path}`, dest: destOf(spec, f) }));
  const { run, dirs } = await ctx.freshSync(`paced-modelsync`, entries);
  try {
    const failed = run.ok ? await sizes(spec.files.map((f) => ({ file: path.join(dirs.models, destOf(spec, f)), size: f.size }))) : `exit ${run.code ?? run.signal}`;
    return failed === undefined ? run : { ...run, failed };
  } finally {
    await ctx.cleanup(dirs.dir);
  }
}

async function viaAria2(ctx: BenchContext, spec: Spec): Promise<Run> {
  const hub = await ctx.hub();
  const dir = await workDir('paced-aria2c');
  const out = path.join(dir, 'out');
  try {
    await ctx.settle();
    const urls = spec.files.map((f) => ({ url: resolveUrl(hub.endpoint, spec.repo, f.path), out: path.basename(f.path) }));
    const only = urls[0];
    const m = spec.files.length === 1 && only ? await aria2Split(only.url, path.join(out, only.out), dir, ['-k1M']) : await aria2List(urls, out, dir, spec.files.length, ['-x16', '-s16']);
    const failed = m.code !== 0 ? `exit ${m.code ?? m.signal}: ${m.stderr.trim().slice(-200)}` : await sizes(spec.files.map((f) => ({ file: path.join(out, path.basename(f.path)), size: f.size })));
    return failed === undefined ? m : { ...m, failed };
  } finally {
    await ctx.cleanup(dir);
  }
}

/** Why the output does not count: a file missing or of the wrong size. */
async function sizes(files: readonly { file: string; size: number }[]): Promise<string | undefined> {
  for (const f of files) {
    const got = await stat(f.file).then(
      (s) => s.size,
      () => -1,
    );
    if (got !== f.size) return `${path.basename(f.file)} is ${got} bytes, expected ${f.size}`;
  }
  return undefined;
}
