/**
 * `npm run stress`: the long repetitions of hostile-world.md that do not fit in CI.
 *
 *   npm run stress [-- --quick] [--sigkill 50] [--concurrent 20] [--size-mb 32] [--seed N]
 *
 * - SIGKILL at random points of a large download, N times (test/stress/sigkill.ts);
 * - concurrent writers on one shared store, N rounds of 8 nodes, then N rounds of 4 nodes with
 *   chaos (a node SIGKILLed or SIGSTOPped mid-download) (test/stress/shared-volume.ts).
 * Prints `case | runs | corrupt files at final paths | leaked secrets` and exits non-zero if any
 * corrupt file, leaked secret or failed run was found.
 */
import { access } from 'node:fs/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { sigkillStress } from './sigkill.js';
import { snapshotBuild } from './snapshot-build.js';

interface Row {
  readonly name: string;
  readonly runs: number;
  readonly corrupt: number;
  /** undefined: that runner does not scan for secrets. */
  readonly leaks: number | undefined;
  readonly notes: string[];
  readonly problems: string[];
  readonly seconds: number;
}

const log = (line: string): void => void process.stderr.write(`${line}\n`);

async function sigkillRow(rounds: number, sizeBytes: number, seed: number | undefined): Promise<Row> {
  const t0 = Date.now();
  const build = await snapshotBuild();
  const s = await sigkillStress({ rounds, sizeBytes, bin: build.bin, ...(seed === undefined ? {} : { seed }), log }).finally(() => build.remove());
  return {
    name: `SIGKILL at a random point of a ${Math.round(sizeBytes / 2 ** 20)} MiB download, then resume (x${rounds})`,
    runs: s.runs,
    corrupt: s.corrupt.length,
    leaks: s.leaks.length,
    notes: [`seed ${s.seed}; ${s.kills} killed, ${s.completions} finished before their kill, ${s.resumes} resumed a partial; final run ${s.finalOk ? 'complete and verified' : 'NOT complete'}`],
    problems: [...s.corrupt.map((c) => `corrupt: ${c}`), ...s.leaks.map((l) => `leak: ${l}`), ...s.failures.map((f) => `failed: ${f}`), ...(s.finalOk ? [] : ['the final run did not leave every entry verified'])],
    seconds: (Date.now() - t0) / 1000,
  };
}

/** The shared-volume runner is another engineer's; it is used when present. */
async function sharedRows(rounds: number, quick: boolean, seed: number | undefined): Promise<Row[]> {
  const file = new URL('./shared-volume.ts', import.meta.url);
  try {
    await access(file);
  } catch {
    log('test/stress/shared-volume.ts is not there: the concurrent-writers rows are skipped');
    return [];
  }
  const { sharedVolumeStress } = (await import(file.href)) as typeof import('./shared-volume.js');
  const rows: Row[] = [];
  for (const [nodes, chaos] of [[quick ? 4 : 8, false], [4, true]] as const) {
    const t0 = Date.now();
    const s = await sharedVolumeStress({ rounds, nodes, sizeBytes: 8 * 2 ** 20, chaos, ...(seed === undefined ? {} : { seed }), log });
    const mean = s.servedRatios.reduce((a, b) => a + b, 0) / Math.max(1, s.servedRatios.length);
    rows.push({
      name: `${nodes} concurrent writers, one store${chaos ? ', one node SIGKILLed or SIGSTOPped per round' : ''} (x${rounds} rounds)`,
      runs: s.runs,
      corrupt: s.corrupt.length,
      leaks: undefined,
      notes: [`${s.kills} killed, ${s.stops} stopped; origin bytes per blob: mean ${mean.toFixed(2)}x, max ${Math.max(0, ...s.servedRatios).toFixed(2)}x`],
      problems: [...s.corrupt.map((c) => `corrupt: ${c}`), ...s.failures.map((f) => `failed: ${f}`)],
      seconds: (Date.now() - t0) / 1000,
    });
  }
  return rows;
}

function render(rows: readonly Row[]): string {
  const lines = [
    '| case | runs | corrupt files at final paths | leaked secrets |',
    '| --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.name} | ${r.runs} | ${r.corrupt} | ${r.leaks ?? 'not scanned'} |`),
    '',
    ...rows.map((r) => `- ${r.name}: ${r.notes.join('; ')}; ${r.seconds.toFixed(0)} s`),
  ];
  const problems = rows.flatMap((r) => r.problems.map((p) => `- ${r.name}: ${p}`));
  if (problems.length > 0) lines.push('', 'PROBLEMS:', ...problems);
  return lines.join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      sigkill: { type: 'string' },
      concurrent: { type: 'string' },
      'size-mb': { type: 'string' },
      seed: { type: 'string' },
    },
  });
  const quick = values.quick;
  const sigkill = Number(values.sigkill ?? (quick ? 5 : 50));
  const concurrent = Number(values.concurrent ?? (quick ? 2 : 20));
  const sizeBytes = Math.round(Number(values['size-mb'] ?? (quick ? 8 : 32)) * 2 ** 20);
  const seed = values.seed === undefined ? undefined : Number(values.seed);
  const started = new Date();
  log(`modelsync stress: ${started.toISOString()}, node ${process.version}, ${os.cpus().length} CPUs, ${os.platform()} ${os.release()}`);
  const rows = [await sigkillRow(sigkill, sizeBytes, seed), ...(await sharedRows(concurrent, quick, seed))];
  const cmd = `npm run stress${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  process.stdout.write(`Stress run of ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC (\`${cmd}\`, ${os.cpus().length} CPUs):\n\n${render(rows)}\n`);
  const bad = rows.some((r) => r.corrupt > 0 || (r.leaks ?? 0) > 0 || r.problems.length > 0);
  return bad ? 1 : 0;
}

main().then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
