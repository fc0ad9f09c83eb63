import { fmt } from '../fmt.js';
import type { SyncReport } from '../sync/types.js';
import { print, printJson, type Out } from './common.js';

/** Print a sync's report (JSON or lines) and return its exit code: 0 only if every entry is present. */
export function reportSync(io: Out, json: boolean, report: SyncReport): number {
  if (json) printJson(io, report);
  else printReport(io, report);
  return report.ok ? 0 : 1;
}

export function printReport(io: Out, report: SyncReport): void {
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
