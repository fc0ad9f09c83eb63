import { execFile } from 'node:child_process';
import { open, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { BIG_FILE, BIG_REPO, summarise, type BenchContext } from './context.js';
import { modelsync, type SyncRun } from './modelsync.js';
import { mib, type Goal } from './report.js';
import { workDir } from './setup.js';

const OLD = new Date('2001-01-01T00:00:00Z');

/**
 * Only the atime: `touch -a` leaves mtime alone (UTIME_OMIT), where fs.utimes would round it to
 * the millisecond, change the file's stamp and so make modelsync rightly distrust it.
 */
async function ageAtime(file: string): Promise<void> {
  await promisify(execFile)('touch', ['-a', '-d', OLD.toISOString(), file]);
}

/**
 * Case 4: re-sync of case 1's modelsync install, nothing changed. "Model bytes read" is measured
 * by the atime trick: the published file (a hard link of the store blob, same inode) gets an atime
 * older than its mtime, and under relatime/strictatime any read() moves it. The trick is first
 * proved on this very file system with a control file that is read on purpose. /proc/<pid>/io
 * rchar is reported beside it: every byte the process read, its own JavaScript and the SQLite
 * state DB included, so it bounds the model bytes read from above.
 */
export async function warmCase(ctx: BenchContext): Promise<void> {
  if (!ctx.cold) {
    ctx.log('case 4: no cold install from case 1; making one');
    await ctx.big();
    const { run, dirs } = await ctx.freshSync('warm-modelsync', [{ source: `hf://${BIG_REPO}/${BIG_FILE}`, dest: `checkpoints/${BIG_FILE}` }]);
    if (!run.ok) {
      await ctx.cleanup(dirs.dir);
      ctx.goals.push({ caseId: 4, what: 'warm re-sync', measured: 'cold sync failed', target: '', pass: false });
      return;
    }
    ctx.cold = { dirs, seconds: run.wallMs / 1000 };
  }
  const { dirs, seconds: coldSeconds } = ctx.cold;
  const hub = await ctx.hub();
  const file = path.join(dirs.models, 'checkpoints', BIG_FILE);
  const size = (await stat(file)).size;
  const atimeWorks = await atimeDetectsReads(ctx);
  const runs: SyncRun[] = [];
  let modelRead = false;
  let requests = 0;
  for (let rep = 0; rep < ctx.opts.repeat; rep++) {
    ctx.log(`case 4: warm re-sync (run ${rep + 1}/${ctx.opts.repeat})`);
    await ageAtime(file);
    const s0 = await hub.stats();
    await ctx.settle();
    const r = await modelsync(dirs, hub.endpoint, { bin: ctx.opts.bin, env: ctx.opts.modelsyncEnv, flags: ctx.opts.modelsyncFlags });
    const s1 = await hub.stats();
    requests += s1.requests - s0.requests;
    if (s1.requests > s0.requests) ctx.log(`case 4: warm re-sync made requests: ${(await hub.requestLog(s0.requests)).join(', ')}`);
    if ((await stat(file)).atimeMs !== OLD.getTime()) modelRead = true;
    runs.push(r);
  }
  const failed = runs.find((r) => !r.ok);
  const row = summarise(4, 'warm re-sync of case 1', 'modelsync sync (nothing to do)', 0, failed ? runs.map((r) => ({ ...r, failed: `exit ${r.code ?? r.signal}` })) : runs, {
    isModelsync: true,
    note: `cold ${coldSeconds.toFixed(2)} s; rchar ${mib(Math.max(...runs.map((r) => r.rchar)))} MiB (all reads, incl. node's own JS), read_bytes ${mib(Math.max(...runs.map((r) => r.readBytes)))} MiB; Hub/CDN requests: ${requests}`,
  });
  ctx.rows.push(row);
  const pct = row.seconds === undefined ? undefined : (row.seconds / coldSeconds) * 100;
  ctx.goals.push({ caseId: 4, what: 'warm re-sync time / cold time', measured: pct === undefined ? 'n/a' : `${pct.toFixed(1)}% (${row.seconds?.toFixed(3)} s of ${coldSeconds.toFixed(2)} s)`, target: '< 5%', pass: pct === undefined ? undefined : pct < 5 });
  const readGoal: Goal = {
    caseId: 4,
    what: `model bytes read on warm re-sync (atime of the ${mib(size)} MiB file)`,
    measured: !atimeWorks ? 'atime does not move on reads here: unmeasured' : modelRead ? 'model file was read (atime moved)' : `0 (atime unchanged; rchar ${mib(Math.max(...runs.map((r) => r.rchar)))} MiB < file)`,
    target: '0',
    pass: !atimeWorks ? undefined : !modelRead && runs.every((r) => r.rchar < size),
  };
  ctx.goals.push(readGoal);
  ctx.goals.push({ caseId: 4, what: 'network requests on warm re-sync', measured: String(requests), target: '0', pass: requests === 0 });
}

/** Does a read move an old atime on this file system (relatime), or is it mounted noatime? */
async function atimeDetectsReads(ctx: BenchContext): Promise<boolean> {
  const dir = await workDir('atime-probe');
  try {
    const f = path.join(dir, 'probe');
    await writeFile(f, 'x'.repeat(4096));
    await ageAtime(f);
    const fh = await open(f, 'r');
    await fh.read(Buffer.alloc(16), 0, 16, 0);
    await fh.close();
    return (await stat(f)).atimeMs !== OLD.getTime();
  } finally {
    await ctx.cleanup(dir);
  }
}
