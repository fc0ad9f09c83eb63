/**
 * modelsync's benchmark suite (issue 3): `npm run bench`, or `npx tsx bench/run.ts --help`.
 * Runs each case against the local Hub stand-in (a child process), prints a markdown table of
 * times, MB/s, ratios and peak RSS, then the goals with PASS/FAIL. Not part of `npm test`.
 */
import { access } from 'node:fs/promises';
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from './args.js';
import { firstByteCase } from './case-first-byte.js';
import { oneFileCase } from './case-one-file.js';
import { pacedCase } from './case-paced.js';
import { flatCase } from './case-flat.js';
import { resumeCase } from './case-resume.js';
import { smallFilesCase } from './case-small.js';
import { warmCase } from './case-warm.js';
import { killAll } from './children.js';
import { BenchContext } from './context.js';
import { ensureAria2 } from './peers.js';
import { renderGoals, renderRows } from './report.js';
import { REPO_ROOT, removeLeftoversAtExit } from './setup.js';

const log = (s: string): void => void process.stderr.write(`bench: ${s}\n`);

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  removeLeftoversAtExit(opts.keep);
  try {
    await access(path.join(REPO_ROOT, 'dist', 'cli.js'));
  } catch {
    log('dist/ is missing: run `npm run build` first (or `npm run bench`, which builds)');
    return 2;
  }
  const needsAria = [1, 2, 3, 8, 9, 10, 11].some((c) => opts.only.has(c));
  const aria2 = needsAria ? await ensureAria2(log, !opts.noInstall) : false;
  const ctx = new BenchContext(opts, aria2, log);
  const started = Date.now();
  // Other work on the machine skews every number: say how busy it was.
  const loadBefore = loadavg()[0] ?? 0;
  // One case that breaks is reported as such; the others still run and print.
  const attempt = async (id: number, fn: () => Promise<void>): Promise<void> => {
    if (!opts.only.has(id)) return;
    try {
      await fn();
    } catch (e) {
      log(`case ${id} broke: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      ctx.goals.push({ caseId: id, what: 'case ran', measured: `error: ${e instanceof Error ? e.message : String(e)}`, target: 'no error', pass: false });
    }
  };
  try {
    // Case 4 re-syncs case 1's install, so it runs right after it.
    await attempt(1, () => oneFileCase(ctx));
    await attempt(4, () => warmCase(ctx));
    if (ctx.cold) await ctx.cleanup(ctx.cold.dirs.dir);
    ctx.cold = undefined;
    await attempt(5, () => resumeCase(ctx));
    await attempt(2, () => pacedCase(ctx, 2));
    await attempt(10, () => pacedCase(ctx, 10));
    await attempt(8, () => pacedCase(ctx, 8));
    await attempt(9, () => pacedCase(ctx, 9));
    await attempt(12, () => firstByteCase(ctx));
    await attempt(3, () => smallFilesCase(ctx));
    await attempt(11, () => pacedCase(ctx, 11));
    await ctx.closeHub();
    await attempt(7, () => flatCase(ctx));
  } finally {
    if (ctx.cold) await ctx.cleanup(ctx.cold.dirs.dir);
    await ctx.closeHub().catch(() => undefined);
    killAll();
  }
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const out = [
    `## modelsync bench (${new Date().toISOString().slice(0, 10)})`,
    '',
    `Machine: ${cpus().length} CPUs (${cpu}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM (${(freemem() / 2 ** 30).toFixed(1)} GiB free), node ${process.version}; load average ${loadBefore.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end.`,
    `Command: \`npx tsx bench/run.ts ${process.argv.slice(2).join(' ')}\`${opts.repeat > 1 ? `; medians of ${opts.repeat} runs` : '; one run each'}; total ${((Date.now() - started) / 1000).toFixed(0)} s.`,
    'Peak RSS: node children report getrusage maxRSS at exit (and /proc VmHWM is polled every 20 ms); curl and aria2c: /proc/<pid>/status VmHWM polled every 20 ms.',
    'MB/s are decimal (1e6 bytes/s). "modelsync speed vs this": this tool\'s time / modelsync\'s time (above 1 means modelsync is faster).',
    '',
    renderRows([...ctx.rows].sort((a, b) => a.caseId - b.caseId)),
    '',
    '### Goals',
    '',
    renderGoals([...ctx.goals].sort((a, b) => a.caseId - b.caseId)),
    '',
    ...ctx.notes.map((n) => `${n}\n`),
  ];
  process.stdout.write(out.join('\n'));
  return ctx.goals.some((g) => g.pass === false) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    killAll();
    log(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(2);
  },
);
