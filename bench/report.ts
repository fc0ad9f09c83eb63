/** One measured tool in one case (medians over --repeat runs). */
export interface Row {
  readonly caseId: number;
  readonly caseName: string;
  readonly tool: string;
  /** undefined: the tool was skipped or failed (see note). */
  readonly seconds: number | undefined;
  /** Fastest and slowest of the successful runs. */
  readonly minSeconds?: number | undefined;
  readonly maxSeconds?: number | undefined;
  /** Payload bytes moved, for MB/s. */
  readonly bytes: number;
  readonly peakRssBytes: number | undefined;
  /** Median user + system CPU seconds of the tool, and of the Hub stand-in serving it (cases 1-2). */
  readonly cpuSeconds?: number | undefined;
  readonly serverCpuSeconds?: number | undefined;
  readonly note?: string;
  /** The row modelsync is compared against in this case. */
  readonly isModelsync?: boolean;
}

export interface Goal {
  readonly caseId: number;
  readonly what: string;
  readonly measured: string;
  readonly target: string;
  /** undefined: could not be judged (a peer was skipped or failed). */
  readonly pass: boolean | undefined;
  /** How the goal is judged, when the line alone cannot say: printed under the table. */
  readonly note?: string;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

const MiB = 1024 * 1024;

export function mib(n: number): string {
  return (n / MiB).toFixed(n < 10 * MiB ? 1 : 0);
}

/** Decimal MB/s, the unit download tools print. */
export function mbps(bytes: number, seconds: number): string {
  return (bytes / 1e6 / seconds).toFixed(0);
}

/** How much faster modelsync is than the peer: peer time / modelsync time. */
export function speedRatio(modelsync: Row | undefined, peer: Row | undefined): number | undefined {
  if (modelsync?.seconds === undefined || peer?.seconds === undefined) return undefined;
  return peer.seconds / modelsync.seconds;
}

export function fmtRatio(r: number | undefined): string {
  return r === undefined ? 'n/a' : `${r.toFixed(2)}x`;
}

export function renderRows(rows: readonly Row[]): string {
  const out = [
    '| case | tool | time (s) | min-max (s) | MB/s | modelsync speed vs this | CPU s (tool + stand-in) | peak RSS (MiB) | notes |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const r of rows) {
    const ms = rows.find((x) => x.caseId === r.caseId && x.isModelsync);
    const ratio = r.isModelsync ? '' : fmtRatio(speedRatio(ms, r));
    const time = r.seconds === undefined ? 'n/a' : r.seconds.toFixed(2);
    const rate = r.seconds === undefined || r.bytes === 0 ? '' : mbps(r.bytes, r.seconds);
    const rss = r.peakRssBytes === undefined ? 'n/a' : mib(r.peakRssBytes);
    const spread = r.minSeconds === undefined || r.maxSeconds === undefined ? '' : `${r.minSeconds.toFixed(2)}-${r.maxSeconds.toFixed(2)}`;
    out.push(`| ${r.caseId}. ${r.caseName} | ${r.tool} | ${time} | ${spread} | ${rate} | ${ratio} | ${cpuCell(r)} | ${rss} | ${r.note ?? ''} |`);
  }
  return out.join('\n');
}

function cpuCell(r: Row): string {
  if (r.cpuSeconds === undefined) return 'n/a';
  return r.serverCpuSeconds === undefined ? r.cpuSeconds.toFixed(2) : `${r.cpuSeconds.toFixed(2)} + ${r.serverCpuSeconds.toFixed(2)}`;
}

export function renderGoals(goals: readonly Goal[]): string {
  const out = ['| case | goal | measured | target | pass |', '| --- | --- | --- | --- | --- |'];
  const notes: string[] = [];
  for (const g of goals) {
    const pass = g.pass === undefined ? 'n/a' : g.pass ? 'PASS' : 'FAIL';
    const mark = g.note === undefined ? '' : ` [${notes.push(g.note)}]`;
    out.push(`| ${g.caseId} | ${g.what}${mark} | ${g.measured} | ${g.target} | ${pass} |`);
  }
  if (notes.length > 0) out.push('', ...notes.map((n, i) => `[${i + 1}] ${n}`));
  return out.join('\n');
}

export function ratioGoal(caseId: number, what: string, r: number | undefined, min: number): Goal {
  // Two decimals would show 0.897 as "0.90x" next to FAIL for ">= 0.9x".
  const measured = r !== undefined && Math.abs(r - min) < 0.005 ? `${r.toFixed(3)}x` : fmtRatio(r);
  return { caseId, what, measured, target: `>= ${min.toFixed(1)}x`, pass: r === undefined ? undefined : r >= min };
}

/** A goal on a ratio of medians, with the ratio's spread over the runs (min/max of each side). */
export function pacedGoal(caseId: number, what: string, ms: Row | undefined, peer: Row | undefined, min: number): Goal {
  const g = ratioGoal(caseId, what, speedRatio(ms, peer), min);
  if (ms?.minSeconds === undefined || ms.maxSeconds === undefined || peer?.minSeconds === undefined || peer.maxSeconds === undefined || g.measured === 'n/a') return g;
  const worst = peer.minSeconds / ms.maxSeconds;
  const best = peer.maxSeconds / ms.minSeconds;
  return { ...g, measured: `${g.measured} (${worst.toFixed(2)}-${best.toFixed(2)}x)` };
}
