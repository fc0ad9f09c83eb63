/** Bench options from argv: `--size 1G --small-files 2000 --only 1,3 --repeat 3`. */
export interface BenchOptions {
  /** Size of the single LFS file of cases 1, 2, 4 and 5. */
  readonly size: number;
  readonly smallFiles: number;
  readonly smallSize: number;
  /** Per-connection CDN pace of case 2, bytes per second. */
  readonly pace: number;
  /** Case 7: this many files of `flatSize` over `flatConnections` connections. */
  readonly flatFiles: number;
  readonly flatSize: number;
  readonly flatConnections: number;
  /** The paced file of cases 8 and 9 (200 MB). */
  readonly midSize: number;
  /** Time to first byte of every Hub and CDN answer in cases 9 and 10, ms. */
  readonly ttfbMs: number;
  /** Case 11, the LoRA pack: this many files of `packSize`. */
  readonly packFiles: number;
  readonly packSize: number;
  readonly only: ReadonlySet<number>;
  readonly repeat: number;
  /** Keep the work dirs (under .bench-tmp/) for a look afterwards. */
  readonly keep: boolean;
  /** Extra flags for every modelsync run, e.g. `--chunk-size 16M`. */
  readonly modelsyncFlags: readonly string[];
  /** Never install aria2 even when root; its cases are then skipped if it is missing. */
  readonly noInstall: boolean;
  /** Extra environment for every modelsync run (`--modelsync-env K=V`). */
  readonly modelsyncEnv: Readonly<Record<string, string>>;
  /** The modelsync entry to run (another build, to compare before and after a change). */
  readonly bin: string | undefined;
}

export const ALL_CASES = [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12] as const;

const USAGE = `usage: tsx bench/run.ts [options]
  --size SIZE            single LFS file of cases 1,2,4,5 (default 1G)
  --small-files N        files in case 3 (default 2000)
  --small-size SIZE      size of each case-3 file (default 100K)
  --pace RATE            case 2 per-connection CDN pace, bytes/s (default 25M, i.e. 25 MB/s)
  --flat-files N         case 7 file count (default 4)
  --flat-size SIZE       case 7 file size (default 2GB = 2e9 bytes; the stand-in hashes each file in one
                         crypto call, which caps a file at 2 GiB - 1)
  --flat-connections N   case 7 connections (default 32)
  --mid-size SIZE        the paced file of cases 8 and 9 (default 200MB)
  --ttfb MS              time to first byte of every answer in cases 9 and 10 (default 30)
  --pack-files N         case 11, the LoRA pack: file count (default 10)
  --pack-size SIZE       case 11 file size (default 300MB)
  --only LIST            cases to run, e.g. 1,3 (default all: 1,2,3,4,5,7,8,9,10,11,12; 6 = the RSS column)
  --repeat N             runs per measurement; medians with min and max are reported (default 3)
  --modelsync-flag F     extra flag for modelsync (repeatable), e.g. --modelsync-flag=--chunk-size=16M
  --modelsync-env K=V    extra environment variable for modelsync (repeatable), e.g. MODELSYNC_CONNECTIONS=32
  --bin PATH             modelsync entry to run (default bin/modelsync.js), e.g. another build
  --no-install           do not apt-get install aria2 even when root
  --keep                 keep the work dirs under .bench-tmp/
SIZE: bytes, or with K/M/G (powers of 1024 for K/M/G; "25MB" style decimal units for RATE too).`;

/** "1G" -> 1 GiB, "100K" -> 102400, "25MB" -> 25e6, "1500" -> 1500. */
export function parseSize(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i.exec(raw.trim());
  if (!m) throw new Error(`bad size "${raw}"`);
  const n = Number(m[1]);
  const unit = (m[2] ?? '').toLowerCase();
  // "MB" is decimal, "M" and "MiB" binary: the issue quotes paces in MB/s and sizes in GB loosely.
  const decimal = /^b$/i.test(m[3] ?? '');
  const base = decimal ? 1000 : 1024;
  const pow = ['', 'k', 'm', 'g', 't'].indexOf(unit);
  return Math.round(n * base ** pow);
}

export function parseArgs(argv: readonly string[]): BenchOptions {
  const v: Record<string, string> = {};
  const modelsyncFlags: string[] = [];
  const modelsyncEnv: Record<string, string> = {};
  let keep = false;
  let noInstall = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    if (a === '--keep') {
      keep = true;
      continue;
    }
    if (a === '--no-install') {
      noInstall = true;
      continue;
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m?.[1]) throw new Error(`unknown argument "${a}"\n${USAGE}`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new Error(`${a} needs a value`);
    if (m[1] === 'modelsync-flag') modelsyncFlags.push(value);
    else if (m[1] === 'modelsync-env') {
      const eq = value.indexOf('=');
      if (eq < 1) throw new Error(`--modelsync-env wants K=V, got "${value}"`);
      modelsyncEnv[value.slice(0, eq)] = value.slice(eq + 1);
    } else v[m[1]] = value;
  }
  const known = ['size', 'small-files', 'small-size', 'pace', 'flat-files', 'flat-size', 'flat-connections', 'mid-size', 'ttfb', 'pack-files', 'pack-size', 'only', 'repeat', 'bin'];
  for (const k of Object.keys(v)) if (!known.includes(k)) throw new Error(`unknown option --${k}\n${USAGE}`);
  const int = (k: string, d: number): number => {
    const n = v[k] === undefined ? d : Number(v[k]);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${k} must be a positive integer`);
    return n;
  };
  const only = v.only === undefined ? new Set<number>(ALL_CASES) : new Set(v.only.split(',').map((s) => Number(s.trim())));
  for (const c of only) if (!(ALL_CASES as readonly number[]).includes(c)) throw new Error(`--only: no case ${c} (cases: ${ALL_CASES.join(',')})`);
  return {
    size: parseSize(v.size ?? '1G'),
    smallFiles: int('small-files', 2000),
    smallSize: parseSize(v['small-size'] ?? '100K'),
    pace: parseSize(v.pace ?? '25MB'),
    flatFiles: int('flat-files', 4),
    flatSize: parseSize(v['flat-size'] ?? '2GB'),
    flatConnections: int('flat-connections', 32),
    midSize: parseSize(v['mid-size'] ?? '200MB'),
    ttfbMs: int('ttfb', 30),
    packFiles: int('pack-files', 10),
    packSize: parseSize(v['pack-size'] ?? '300MB'),
    only,
    repeat: int('repeat', 3),
    keep,
    modelsyncFlags,
    modelsyncEnv,
    noInstall,
    bin: v.bin,
  };
}
