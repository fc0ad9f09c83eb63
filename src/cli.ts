import { parseArgs } from 'node:util';
import { processEnvironment } from './config.js';
import { OPTIONS } from './cli-options.js';
import { flagsOf } from './command-flags.js';
import { ModelsyncError } from './errors.js';
import { machineError, syscallText } from './os-errors.js';
import { limitsProblem } from './os-limits.js';
import type { CommandIo, WarmAttempt } from './commands/common.js';

type Handler = (io: CommandIo) => Promise<number>;

/** Commands load lazily: `modelsync run` on a warm volume should not pay for the others. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Handler> }> = {
  sync: { summary: 'bring the models dir in line with the manifest; exit 0 only if all verified', load: async () => (await import('./commands/sync.js')).syncCommand },
  run: { summary: 'sync required models, then start and supervise CMD (ComfyUI); serve the control API', load: async () => (await import('./commands/run.js')).runCommand },
  resync: { summary: 'ask the running daemon to sync now (or sync in-process if none runs)', load: async () => (await import('./commands/resync.js')).resyncCommand },
  ensure: { summary: 'have the running daemon fetch models on demand (ENTRY... or --workflow FILE), and wait for them', load: async () => (await import('./commands/ensure.js')).ensureCommand },
  plan: { summary: 'dry run: present, missing, bytes to fetch, free space', load: async () => (await import('./commands/plan.js')).planCommand },
  status: { summary: 'what the store and models dir hold, per entry', load: async () => (await import('./commands/status.js')).statusCommand },
  verify: { summary: 're-check entries (stat level; --full re-hashes and rebuilds the state DB)', load: async () => (await import('./commands/verify.js')).verifyCommand },
  gc: { summary: 'remove store content no manifest references any more (--dry-run to preview)', load: async () => (await import('./commands/gc.js')).gcCommand },
  lock: { summary: 'pin every entry (commit, size, sha256) into a lock file next to the manifest', load: async () => (await import('./commands/lock.js')).lockCommand },
  'import-workflow': { summary: 'turn the models list embedded in a ComfyUI workflow into manifest entries', load: async () => (await import('./commands/import-workflow.js')).importWorkflowCommand },
  mirror: { summary: 'push --to s3://BUCKET/PREFIX/: pre-seed a mirror with every blob of the manifest', load: async () => (await import('./commands/mirror.js')).mirrorCommand },
  'comfy-paths': { summary: "print an extra_model_paths.yaml that points ComfyUI at the models dir", load: async () => (await import('./commands/comfy-paths.js')).comfyPathsCommand },
};

/** `modelsync --help`: built by cli-help.ts from the same flag table as every command's page. */
async function usage(): Promise<string> {
  return (await import('./cli-help.js')).mainUsage(Object.entries(COMMANDS).map(([name, c]) => ({ name, summary: c.summary })));
}

/**
 * `run`'s CMD starts at the first word that is not one of our flags, "--" or not: the image's
 * `ENTRYPOINT ["tini", "--", "modelsync", "run"]` receives a plain `CMD ["python3", "main.py", ...]`,
 * whose own flags must not be parsed as ours.
 */
function commandAfterFlags(args: readonly string[]): string[] {
  const takesValue = (a: string): boolean => {
    if (a.includes('=')) return false;
    const opt = a.startsWith('--') ? OPTIONS[a.slice(2) as keyof typeof OPTIONS] : Object.values(OPTIONS).find((o) => 'short' in o && `-${o.short}` === a);
    return opt?.type === 'string';
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === '--') return [...args];
    if (!a.startsWith('-') || a === '-') return [...args.slice(0, i), '--', ...args.slice(i)];
    if (takesValue(a)) i++;
  }
  return [...args];
}

/** A command's own help page; loaded only when asked for. */
async function helpFor(name: string): Promise<string | undefined> {
  if (COMMANDS[name] === undefined) throw new ModelsyncError('E_USAGE', `unknown command "${name}" (see modelsync --help)`);
  return (await import('./cli-help.js')).commandHelp(name);
}

/** The registered commands (a test holds every one to a help page). */
export function commandNames(): string[] {
  return Object.keys(COMMANDS);
}

/** argv -> command; nothing else. Returns the exit code. */
export async function main(argv: readonly string[], io: Omit<CommandIo, 'flags' | 'positionals'>): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    // `modelsync help sync` is `modelsync sync --help`.
    const page = name === 'help' && rest[0] !== undefined ? await helpFor(rest[0]) : undefined;
    io.stdout.write(`${page ?? (await usage())}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    io.stdout.write('modelsync 0.1.0\n');
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) throw new ModelsyncError('E_USAGE', `unknown command "${name}" (see modelsync --help)`);
  let parsed;
  try {
    parsed = parseArgs({ args: name === 'run' ? commandAfterFlags(rest) : [...rest], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new ModelsyncError('E_USAGE', (e as Error).message, { cause: e });
  }
  if (parsed.values.help) {
    io.stdout.write(`${(await helpFor(name)) ?? (await usage())}\n`);
    return 0;
  }
  // A flag another command takes is refused, not ignored: `plan --update-lock` would rewrite the
  // lock of a dry run, and `gc --manifest` suggests a gc that reads the manifest, which it does not.
  const takes = flagsOf(name);
  const foreign = takes === undefined ? undefined : Object.keys(parsed.values).find((f) => !takes.has(f));
  if (foreign !== undefined) throw new ModelsyncError('E_USAGE', `${name} does not take --${foreign} (see modelsync ${name} --help)`);
  // Before loading the command: under too low a limit the loading itself is what fails.
  const tooLow = limitsProblem();
  if (tooLow !== undefined) throw new ModelsyncError('E_LIMIT', tooLow);
  const handler = await cmd.load();
  return handler(withArgs(io, parsed.values, parsed.positionals));
}

/** The command's io: a spread would read process.stdout and process.stderr, which builds them. */
function withArgs(io: Omit<CommandIo, 'flags' | 'positionals'>, flags: CommandIo['flags'], positionals: readonly string[]): CommandIo {
  const d = Object.getOwnPropertyDescriptors(io);
  return Object.defineProperties({}, { ...d, flags: { value: flags, enumerable: true }, positionals: { value: positionals, enumerable: true } }) as CommandIo;
}

/** Exit codes and the two error tiers live here. `warm`: what warm-start.ts (the bin's entry) found. */
export function runMain(argv: readonly string[], warm?: WarmAttempt): void {
  // Getters: process.stdout builds a stream (a socket for a pipe) when first read, and a sync
  // writes to it only at its end, long after its first byte.
  const io = {
    env: processEnvironment(),
    warm,
    get stdout(): NodeJS.WritableStream {
      return process.stdout;
    },
    get stderr(): NodeJS.WritableStream {
      return process.stderr;
    },
  };
  main(argv, io).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      // A limit or a full, read-only disk met where no caller expected it is still not a bug.
      const known = e instanceof ModelsyncError ? e : machineError(e, syscallText(e));
      if (known) {
        process.stderr.write(`modelsync: ${known.message}\n`);
        process.exitCode = known.exitCode;
      } else {
        process.stderr.write(`modelsync: internal error (a bug; please report it)\n${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
        process.exitCode = 1;
      }
    },
  );
}
