import { fmt } from '../fmt.js';
import type { SyncReport } from '../sync/types.js';
import type { WriteBackStats } from '../sync/write-back.js';
import { print, printJson, type Out } from './common.js';
import { removalLine } from './removal-line.js';

/** What a sync's write-back to `mirror_write` did (a write-back failure never fails the sync). */
export interface MirrorWriteReport extends WriteBackStats {
  readonly to: string;
}

/** Print a sync's report (JSON or lines) and return its exit code: 0 only if every entry is present. */
export function reportSync(io: Out, json: boolean, report: SyncReport, mirrorWrite?: MirrorWriteReport): number {
  if (json) printJson(io, mirrorWrite === undefined ? report : { ...report, mirrorWrite });
  else {
    printReport(io, report);
    if (mirrorWrite !== undefined) {
      const w = mirrorWrite;
      print(io, `write-back to ${w.to}: ${w.uploaded} uploaded (${fmt(w.bytes)}), ${w.present} already there, ${w.failed} failed`);
    }
  }
  return report.ok ? 0 : 1;
}

export function printReport(io: Out, report: SyncReport): void {
  for (const r of report.entries) {
    if (r.state === 'failed') print(io, `FAILED     ${r.dest}: ${r.error?.message ?? 'unknown error'}`);
    else print(io, `${r.state.padEnd(10)} ${r.dest}${r.size === undefined ? '' : ` (${fmt(r.size)})`}`);
  }
  const removed = report.removed ?? [];
  for (const r of removed) print(io, removalLine(r));
  const count = (s: string): number => report.entries.filter((r) => r.state === s).length;
  const unpublished = removed.filter((r) => r.state === 'unpublished').length;
  print(
    io,
    `${report.entries.length} entries: ${count('present')} present, ${count('published')} published, ${count('failed')} failed${unpublished === 0 ? '' : `; ${unpublished} unpublished`}; fetched ${fmt(report.bytesFetched)}${sources(report)} in ${(report.durationMs / 1000).toFixed(1)} s`,
  );
}

/** Where the bytes came from, when not all from origins: " (origin 1 GB, mirror 3 GB, volume 2 GB)". */
function sources(report: SyncReport): string {
  const b = report.bytesBySource;
  if (b === undefined || (b.mirror === 0 && b.volume === 0)) return '';
  return ` (origin ${fmt(b.origin)}, mirror ${fmt(b.mirror)}, volume ${fmt(b.volume)})`;
}
