import { COMMAND_FLAGS, type FlagName } from './command-flags.js';

/** A command's flags, from the one list that cli.ts also checks a command line against. */
const own = (name: string): readonly FlagName[] => COMMAND_FLAGS[name] ?? [];

/**
 * One entry per flag, the one text both `modelsync --help` and each `COMMAND --help` print.
 * A default and the variables that set a flag are fields, never free text: test/cli-help.test.ts
 * sets the flag to the stated default, and each variable to a value, and compares the configs.
 */
interface FlagHelp {
  readonly arg?: string;
  /** What it does; no default and no variable name in it (those are the fields below). */
  readonly text: string;
  /** In effect when neither the flag nor a variable is given, spelt as the flag takes it. */
  readonly default?: string;
  /** The variables read when the flag is not given, in the order they are read. */
  readonly env?: readonly string[];
  /** The variable takes milliseconds where the flag takes seconds. */
  readonly envMs?: true;
}

const FLAGS: Record<FlagName, FlagHelp> = {
  manifest: { arg: 'FILE', text: 'the manifest (YAML or JSON)', env: ['MODELSYNC_MANIFEST'] },
  'models-dir': { arg: 'DIR', text: "ComfyUI's models/ folder, where dests are published (created by sync and run if missing)", env: ['MODELSYNC_MODELS_DIR'] },
  'store-dir': { arg: 'DIR', text: 'content-addressed store, same filesystem as the models dir', default: 'DIR/.modelsync-store', env: ['MODELSYNC_STORE_DIR'] },
  'state-dir': { arg: 'DIR', text: 'local SQLite state, never on NFS (without XDG_STATE_HOME: /var/lib/modelsync as root, else ~/.local/state/modelsync)', default: '$XDG_STATE_HOME/modelsync', env: ['MODELSYNC_STATE_DIR'] },
  json: { text: 'machine-readable output on stdout' },
  'log-level': { arg: 'LEVEL', text: 'fatal, error, warn, info, debug, trace or silent', default: 'info', env: ['MODELSYNC_LOG_LEVEL'] },
  'log-format': { arg: 'FORMAT', text: 'auto (pretty on a terminal, JSON lines otherwise), json or pretty', default: 'auto', env: ['MODELSYNC_LOG_FORMAT'] },
  'child-logs': { arg: 'MODE', text: "passthrough (CMD's output on stdout as it is) or json (one record per line on stderr)", default: 'passthrough', env: ['MODELSYNC_CHILD_LOGS'] },
  connections: { arg: 'N', text: 'connections open at once, all files and hosts together: the hard cap (lowered to what the open-file limit holds)', default: '64', env: ['MODELSYNC_CONNECTIONS'] },
  'host-connections': { arg: 'N', text: 'most connections to one host: starts at half of --connections (at least 16), grows while throughput grows', default: '64', env: ['MODELSYNC_HOST_CONNECTIONS'] },
  'chunk-size': { arg: 'SIZE', text: 'largest chunk (one ranged request) of a file: chunks are size/64 in whole MiB, at least 4M, at most this', default: '32M', env: ['MODELSYNC_CHUNK_SIZE'] },
  'min-rate': { arg: 'RATE', text: 'bytes/s below which a download or upload is cut (0: none)', default: '4K', env: ['MODELSYNC_MIN_RATE'] },
  control: { arg: 'HOST:PORT', text: "the daemon's control API", default: '127.0.0.1:8189', env: ['MODELSYNC_CONTROL'] },
  refresh: { text: 'ask the Hub again whether branch revisions (@main) moved' },
  offline: { text: 'no network: only what the store and state DB hold', env: ['HF_HUB_OFFLINE'] },
  full: { text: 're-hash every file and rebuild the state DB from what is on disk' },
  'dry-run': { text: 'say what would be removed, remove nothing' },
  'keep-removed': { text: 'leave published what the manifest no longer names (without it: unpublish what modelsync placed)', env: ['MODELSYNC_KEEP_REMOVED'] },
  'update-lock': { text: 're-pin entries that drifted from the lock file instead of refusing' },
  's3-endpoint': { arg: 'URL', text: 'S3-compatible endpoint', env: ['AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL'] },
  's3-path-style': { text: 'path-style S3 addressing (MinIO and most S3-compatible stores)', env: ['MODELSYNC_S3_PATH_STYLE'] },
  'comfy-url': { arg: 'URL', text: "where CMD answers HTTP (without it: from CMD's --listen/--port, else 127.0.0.1:8188)", env: ['MODELSYNC_COMFY_URL'] },
  'startup-timeout': { arg: 'S', text: 'seconds CMD may take to answer GET /system_stats (0: do not probe)', default: '600', env: ['MODELSYNC_STARTUP_TIMEOUT'] },
  restart: { arg: 'POLICY', text: 'on-failure, always or never', default: 'on-failure', env: ['MODELSYNC_RESTART'] },
  'stop-timeout': { arg: 'S', text: "seconds from SIGTERM to SIGKILL for CMD's process group", default: '10', env: ['MODELSYNC_STOP_TIMEOUT'] },
  'probe-interval': { arg: 'S', text: 'a health probe every S seconds once CMD answers', default: '5', env: ['MODELSYNC_PROBE_INTERVAL_MS'], envMs: true },
  'probe-timeout': { arg: 'S', text: 'each probe waits S seconds for its answer', default: '5', env: ['MODELSYNC_PROBE_TIMEOUT_MS'], envMs: true },
  'probe-misses': { arg: 'N', text: 'N unanswered probes in a row: CMD is hung and is restarted', default: '3', env: ['MODELSYNC_PROBE_FAILURES'] },
  'max-restarts': { arg: 'N', text: 'give up (exit 3) after N starts in a row that never became healthy (0: never)', default: '10', env: ['MODELSYNC_MAX_RESTARTS'] },
  gate: { arg: 'HOST:PORT', text: "a front door in front of ComfyUI: 503 with Retry-After until it answers, prompts' models fetched first, every request relayed", env: ['MODELSYNC_GATE'] },
  'gate-frontend-downloads': { text: "through the gate, serve ComfyUI frontend's server-side download API (experimental)", env: ['MODELSYNC_GATE_FRONTEND_DOWNLOADS'] },
  'grace-period': { arg: 'S', text: 'only remove what has been unreferenced this many seconds', default: '86400', env: ['MODELSYNC_GC_GRACE_PERIOD'] },
  output: { arg: 'FILE', text: 'write the result here instead of stdout' },
  to: { arg: 'URI', text: 'the S3 mirror to seed: s3://BUCKET/PREFIX/ (blobs at PREFIX/sha256/<hex>)' },
  workflow: { arg: 'FILE', text: "also ensure the models a ComfyUI workflow names: its models[] and nodes' properties.models[], or a prompt's URL loader inputs" },
  timeout: { arg: 'S', text: 'stop waiting after S seconds (exit 1; the job goes on in the daemon); 0: answer with the states as they are' },
  help: { text: "this command's usage" },
  version: { text: "modelsync's version" },
};

/** A flag's line: `  --name ARG  text; default X; env NAME`. */
function flagLine(name: FlagName): string {
  const f = FLAGS[name];
  const env = f.env === undefined ? '' : `; env ${f.env.join(' / ')}${f.envMs ? ' in milliseconds' : ''}`;
  const dflt = f.default === undefined ? '' : `; default ${f.default}`;
  return `  ${`--${name}${f.arg ? ` ${f.arg}` : ''}`.padEnd(22)} ${f.text}${dflt}${env}`;
}


interface CommandHelp {
  readonly usage: string;
  readonly about: readonly string[];
  readonly flags: readonly FlagName[];
  readonly examples: readonly string[];
}

const HELP: Record<string, CommandHelp> = {
  sync: {
    usage: 'modelsync sync [flags]',
    about: [
      'Bring the models dir in line with the manifest: fetch what is missing, verify every byte, publish, and',
      'unpublish what modelsync placed for entries the manifest no longer names (a file of your own stays).',
      'Exit 0 only if every entry is present and verified; 1 if any failed; 2 for a bad manifest.',
    ],
    flags: own('sync'),
    examples: ['modelsync sync --manifest models.yaml --models-dir /workspace/ComfyUI/models', 'HF_TOKEN=hf_... modelsync sync --refresh --json'],
  },
  run: {
    usage: 'modelsync run [flags] [--] CMD ARGS...',
    about: [
      'The daemon: sync the required entries, then start CMD (ComfyUI) and supervise it; keep syncing the',
      'optional ones, watch the manifest, serve the control API. Without CMD: sync, watch and serve only.',
      'CMD starts at the first word that is not one of these flags. Exit: 1 required models missing, 2 bad',
      "usage or manifest, 3 gave up on CMD, otherwise CMD's own code (128+N for signal N).",
    ],
    flags: own('run'),
    examples: ['modelsync run --manifest models.yaml --models-dir /models -- python3 main.py --listen 0.0.0.0', 'modelsync run --manifest /etc/modelsync/manifest.yaml --models-dir /srv/comfyui/models   # node service, no child'],
  },
  resync: {
    usage: 'modelsync resync [flags]',
    about: ['Ask the running daemon to re-read its manifest and sync now (branch revisions asked again), wait, print', 'the outcome. Only --control is needed; with no daemon answering it syncs in-process, which needs the', 'models dir and the manifest. Exit 0 all verified, 1 failures, 2 the manifest on disk was rejected.'],
    flags: own('resync'),
    examples: ['modelsync resync --control 127.0.0.1:8189', 'MODELSYNC_CONTROL=127.0.0.1:8190 modelsync resync --json'],
  },
  plan: {
    usage: 'modelsync plan [flags]',
    about: ['Dry run: which entries are present, which would be fetched or only published, which would be', 'unpublished, the bytes to fetch and the free space. Nothing is downloaded or changed.'],
    flags: own('plan'),
    examples: ['modelsync plan --manifest models.yaml --models-dir ./models', 'modelsync plan --json | jq .bytesToFetch'],
  },
  status: {
    usage: 'modelsync status [flags]',
    about: ["Per entry, what the models dir holds. A daemon answering on --control gives its live view (downloads", 'in progress, ComfyUI); otherwise stat and the state DB tell, with no network request.'],
    flags: own('status'),
    examples: ['modelsync status --manifest models.yaml --models-dir ./models', 'modelsync status --control 127.0.0.1:8189 --json'],
  },
  verify: {
    usage: 'modelsync verify [flags]',
    about: ['Re-check every entry: by stat against what was verified (default), or by re-hashing every byte', '(--full, which also rebuilds the state DB and repairs a corrupt file). Exit 0 only if all match.'],
    flags: own('verify'),
    examples: ['modelsync verify --full --manifest models.yaml --models-dir ./models'],
  },
  gc: {
    usage: 'modelsync gc [flags]',
    about: ['Remove store content that no node sharing the store references any more, once it has been', 'unreferenced for the grace period. Needs no manifest.'],
    flags: own('gc'),
    examples: ['modelsync gc --dry-run --models-dir /models', 'modelsync gc --grace-period 3600 --models-dir /models'],
  },
  lock: {
    usage: 'modelsync lock [flags]',
    about: ['Pin every entry (Hub commit, size, sha256) into NAME.lock.json beside the manifest. Entries the lock', 'already pins are kept; --refresh resolves them all again. Written only if every entry could be pinned.'],
    flags: own('lock'),
    examples: ['modelsync lock --manifest models.yaml --models-dir ./models', 'modelsync lock --refresh --manifest models.yaml --models-dir ./models'],
  },
  'import-workflow': {
    usage: 'modelsync import-workflow WORKFLOW.json [flags]',
    about: ['Turn the models list a ComfyUI workflow embeds (node properties.models) into manifest entries.'],
    flags: own('import-workflow'),
    examples: ['modelsync import-workflow flux_schnell.json -o models.yaml'],
  },
  mirror: {
    usage: 'modelsync mirror push --to s3://BUCKET/PREFIX/ [flags]',
    about: [
      "Pre-seed an S3 mirror with every blob of the manifest (at PREFIX/sha256/<hex>): what the mirror has is",
      'skipped (HeadObject); the rest is uploaded from the local store when there and verified, else fetched',
      '(verified) first. Exit 0 when every blob is on the mirror, 1 if any failed, 2 for bad usage or manifest.',
    ],
    flags: own('mirror'),
    examples: ['modelsync mirror push --to s3://acme-models-us-east/modelsync/ --manifest models.yaml --models-dir ./models'],
  },
  ensure: {
    usage: 'modelsync ensure ENTRY... [--workflow FILE] [flags]',
    about: [
      "Have the running daemon (--control) fetch models on demand, under its manifest's on_demand policy, and wait",
      'for them with a progress bar (on a terminal; otherwise one line per state change on stderr). ENTRY is:',
      '  SOURCE=FOLDER/FILE   hf://ORG/REPO/PATH, s3://BUCKET/KEY, https://URL (a Hub resolve URL is read as hf://)',
      "  SOURCE=FOLDER/       the same, named after the source's last path segment (civitai-VERSION.safetensors for Civitai)",
      "  civitai://VERSION    a Civitai version alone (urn:air:..., its download or page URL too): Civitai's file name",
      '  ...#sha256:HEX       after any of them: the content it must have',
      'DEST follows the last "=" that is followed by a path, so the ?query of a URL stays in the source.',
      'Exit 0 all ready, 1 one failed (its code, dest and message on stderr), no daemon, HTTP 5xx or --timeout,',
      '2 bad usage or a request the daemon refuses (E_USAGE, E_MANIFEST, E_POLICY), 130 interrupted (the job goes on).',
    ],
    flags: own('ensure'),
    examples: [
      'modelsync ensure hf://org/loras/style.safetensors=loras/style.safetensors',
      'modelsync ensure civitai://128713 https://example.org/up/4x.safetensors=upscale_models/#sha256:9a0b...',
      'MODELSYNC_CONTROL_TOKEN=... modelsync ensure --workflow flux_schnell.json --timeout 600 --json',
    ],
  },
  'comfy-paths': {
    usage: 'modelsync comfy-paths [flags]',
    about: ["Print an extra_model_paths.yaml that points ComfyUI's model folders at the models dir."],
    flags: own('comfy-paths'),
    examples: ['modelsync comfy-paths --models-dir /srv/comfyui/models > /opt/ComfyUI/extra_model_paths.yaml'],
  },
};

/** `modelsync COMMAND --help`; undefined for a command without its own page. */
export function commandHelp(name: string): string | undefined {
  const h = HELP[name];
  if (!h) return undefined;
  const flags = [...new Set([...h.flags, 'help' as const])].map(flagLine);
  return [`usage: ${h.usage}`, '', ...h.about, '', 'flags:', ...flags, '', 'examples:', ...h.examples.map((e) => `  ${e}`)].join('\n');
}

/**
 * `modelsync --help`, from the same table: the flags most commands take once, then per command
 * the rest, each flag's line where it first appears and its name where it appears again.
 */
export function mainUsage(commands: readonly { readonly name: string; readonly summary: string }[]): string {
  const pages = commands.flatMap((c) => {
    const h = HELP[c.name];
    return h ? [[c.name, h] as const] : [];
  });
  const takers = (f: FlagName): number => pages.filter(([, h]) => h.flags.includes(f)).length;
  const common = (Object.keys(FLAGS) as FlagName[]).filter((f) => takers(f) > pages.length / 2);
  const shown = new Set<FlagName>([...common, 'help', 'version']);
  const perCommand = pages.flatMap(([name, h]) => {
    const own = h.flags.filter((f) => !common.includes(f));
    if (own.length === 0) return [];
    const fresh = own.filter((f) => !shown.has(f));
    const again = own.filter((f) => shown.has(f));
    for (const f of fresh) shown.add(f);
    return ['', `${name} flags:`, ...fresh.map(flagLine), ...(again.length > 0 ? [`  also ${again.map((f) => `--${f}`).join(', ')}`] : [])];
  });
  return [
    "usage: modelsync <command> [flags] [-- CMD ARGS...]      (modelsync COMMAND --help: that command's page)",
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(16)} ${c.summary}`),
    '',
    'flags most commands take:',
    ...common.map(flagLine),
    ...perCommand,
    '',
    'every command: --help; modelsync --version',
    '',
    "exit codes: 0 ok, 1 sync or verification failure, 2 bad usage or manifest, 3 run gave up on CMD; run: otherwise CMD's code",
  ].join('\n');
}

/** The commands that have a help page (a test holds it to the command list). */
export function helpTopics(): string[] {
  return Object.keys(HELP);
}

