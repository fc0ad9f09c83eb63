import { parseArgs } from 'node:util';
import { processEnvironment } from './config.js';
import { OPTIONS } from './cli-options.js';
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

export function usage(): string {
  const cmds = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(16)} ${c.summary}`);
  return [
    'usage: modelsync <command> [flags] [-- CMD ARGS...]      (modelsync COMMAND --help: that command\'s flags)',
    '',
    'commands:',
    ...cmds,
    '',
    'common flags:',
    '  --manifest FILE       manifest (YAML/JSON); env MODELSYNC_MANIFEST',
    "  --models-dir DIR      ComfyUI's models/ folder; env MODELSYNC_MODELS_DIR",
    '  --store-dir DIR       content-addressed store (default DIR/.modelsync-store); env MODELSYNC_STORE_DIR',
    '  --state-dir DIR       local state DB (never on NFS); env MODELSYNC_STATE_DIR',
    '  --connections N       connections open at once, all hosts together: the hard cap (default 64); env MODELSYNC_CONNECTIONS',
    '  --host-connections N  most connections to one host: starts at 16, grows while throughput grows (default 64); env MODELSYNC_HOST_CONNECTIONS',
    '  --chunk-size SIZE     largest chunk of a file (default 32M; smaller files get size/64, at least 4M); env MODELSYNC_CHUNK_SIZE',
    '  --min-rate RATE       bytes/s below which a download is cut (default 4K; 0: none); env MODELSYNC_MIN_RATE',
    '  --control HOST:PORT   daemon control API (default 127.0.0.1:8189); env MODELSYNC_CONTROL',
    '  --refresh             ask the Hub whether branch revisions moved',
    '  --offline             no network (same as HF_HUB_OFFLINE=1)',
    '  --json                machine-readable output',
    '  --log-level LEVEL     info (default), debug, warn, error...; env MODELSYNC_LOG_LEVEL',
    '  --log-format FORMAT   auto (pretty on a terminal, else JSON lines), json or pretty; env MODELSYNC_LOG_FORMAT',
    '',
    'run flags (CMD starts at the first word that is not a flag; "--" makes it explicit):',
    '  --restart POLICY      on-failure (default), always or never; env MODELSYNC_RESTART',
    '  --startup-timeout S   seconds for CMD to answer GET /system_stats (default 600; 0: do not probe)',
    '  --stop-timeout S      seconds between SIGTERM and SIGKILL for CMD\'s process group (default 10)',
    '  --max-restarts N      give up (exit 3) after N starts in a row that never became healthy (default 10; 0: never)',
    '  --probe-interval S    a health probe every S seconds once CMD answers (default 5)',
    '  --probe-timeout S     each probe waits S seconds for its answer (default 5)',
    '  --probe-misses N      N unanswered probes in a row: CMD is hung and is restarted (default 3)',
    '  --comfy-url URL       where CMD answers (default: from its --listen/--port, port 8188)',
    '  --gate HOST:PORT      a front door in front of ComfyUI: 503 until it answers, prompts\' models fetched first',
    '  --gate-frontend-downloads  (experimental) serve ComfyUI frontend\'s server-side download API',
    "  --child-logs MODE     passthrough (default: CMD's output on stdout as it is) or json (records on stderr)",
    '',
    "exit codes: 0 ok, 1 sync or verification failure, 2 bad usage or manifest, 3 run gave up on CMD; run: otherwise CMD's code",
  ].join('\n');
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
    io.stdout.write(`${page ?? usage()}\n`);
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
    io.stdout.write(`${(await helpFor(name)) ?? usage()}\n`);
    return 0;
  }
  // Before loading the command: under too low a limit the loading itself is what fails.
  const tooLow = limitsProblem();
  if (tooLow !== undefined) throw new ModelsyncError('E_LIMIT', tooLow);
  const handler = await cmd.load();
  return handler({ ...io, flags: parsed.values, positionals: parsed.positionals });
}

/** Exit codes and the two error tiers live here. `warm`: what warm-start.ts (the bin's entry) found. */
export function runMain(argv: readonly string[], warm?: WarmAttempt): void {
  main(argv, { env: processEnvironment(), stdout: process.stdout, stderr: process.stderr, warm }).then(
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
