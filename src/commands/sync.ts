import { progressBar } from '../progress.js';
import { runSync } from '../sync/engine.js';
import { fmt } from '../sync/plan.js';
import type { SyncReport } from '../sync/types.js';
import { abortOnSignals, loadAll, print, printJson, type CommandIo } from './common.js';

/** `modelsync sync`: exit 0 only if every entry is present and verified. */
export async function syncCommand(io: CommandIo): Promise<number> {
  const { config, manifest, ctx } = await loadAll(io);
  const stop = abortOnSignals();
  const bar = config.tty && !config.json ? progressBar(process.stderr) : undefined;
  try {
    const report = await runSync(ctx, manifest, { signal: stop.signal, ...(bar ? { events: bar.events } : {}) });
    bar?.done();
    if (config.json) printJson(io, report);
    else printReport(io, report);
    return report.ok ? 0 : 1;
  } finally {
    bar?.done();
    stop.dispose();
    ctx.close();
  }
}

export function printReport(io: CommandIo, report: SyncReport): void {
  for (const r of report.entries) {
    if (r.state === 'failed') print(io, `FAILED     ${r.dest}: ${r.error?.message ?? 'unknown error'}`);
    else print(io, `${r.state.padEnd(10)} ${r.dest}${r.size === undefined ? '' : ` (${fmt(r.size)})`}`);
  }
  const count = (s: string): number => report.entries.filter((r) => r.state === s).length;
  print(
    io,
    `${report.entries.length} entries: ${count('present')} present, ${count('published')} published, ${count('failed')} failed; fetched ${fmt(report.bytesFetched)} in ${(report.durationMs / 1000).toFixed(1)} s`,
  );
}
