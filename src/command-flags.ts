import type { OPTIONS } from './cli-options.js';

export type FlagName = keyof typeof OPTIONS;

const WHERE: readonly FlagName[] = ['manifest', 'models-dir', 'store-dir', 'state-dir'];
const LOGS: readonly FlagName[] = ['log-level', 'log-format', 'json'];
const NETWORK: readonly FlagName[] = ['connections', 'host-connections', 'chunk-size', 'min-rate', 'refresh', 'offline', 's3-endpoint', 's3-path-style'];

/**
 * The flags each command takes, in its help page's order. A flag not listed for a command is bad
 * usage there (cli.ts; the warm path hands such a sync to the full one). Apart from cli-help.ts so
 * that the warm bundle and the cold path need no help text to check a command line.
 */
export const COMMAND_FLAGS: Readonly<Record<string, readonly FlagName[]>> = {
  sync: [...WHERE, ...NETWORK, 'update-lock', 'keep-removed', ...LOGS],
  run: [...WHERE, 'control', 'gate', 'gate-frontend-downloads', 'restart', 'max-restarts', 'startup-timeout', 'stop-timeout', 'probe-interval', 'probe-timeout', 'probe-misses', 'comfy-url', 'child-logs', 'update-lock', 'keep-removed', ...NETWORK.filter((f) => f !== 'refresh'), 'log-level', 'log-format'],
  resync: ['control', ...WHERE, 'keep-removed', ...LOGS],
  plan: [...WHERE, 'refresh', 'offline', 'keep-removed', 's3-endpoint', 's3-path-style', ...LOGS],
  status: ['control', ...WHERE, 'keep-removed', ...LOGS],
  verify: [...WHERE, 'full', ...LOGS],
  gc: ['models-dir', 'store-dir', 'dry-run', 'grace-period', ...LOGS],
  lock: [...WHERE, 'refresh', 'offline', 's3-endpoint', 's3-path-style', ...LOGS],
  'import-workflow': ['output'],
  mirror: ['to', ...WHERE, ...NETWORK.filter((f) => f !== 'refresh'), ...LOGS],
  ensure: ['workflow', 'timeout', 'control', 'json'],
  'comfy-paths': ['models-dir'],
};

/** The flags a command takes, `--help` included; undefined for a command without a page. */
export function flagsOf(name: string): ReadonlySet<string> | undefined {
  const f = COMMAND_FLAGS[name];
  return f ? new Set<string>([...f, 'help']) : undefined;
}
