/**
 * Every flag any command takes, for util.parseArgs; shared by cli.ts and the warm-start entry.
 * The one list: Flags (what config.ts and the commands read) is derived from it.
 */
export const OPTIONS = {
  manifest: { type: 'string' },
  'models-dir': { type: 'string' },
  'store-dir': { type: 'string' },
  'state-dir': { type: 'string' },
  json: { type: 'boolean' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  'child-logs': { type: 'string' },
  connections: { type: 'string' },
  'host-connections': { type: 'string' },
  'chunk-size': { type: 'string' },
  'min-rate': { type: 'string' },
  control: { type: 'string' },
  refresh: { type: 'boolean' },
  offline: { type: 'boolean' },
  full: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  'update-lock': { type: 'boolean' },
  'keep-removed': { type: 'boolean' },
  's3-endpoint': { type: 'string' },
  's3-path-style': { type: 'boolean' },
  'comfy-url': { type: 'string' },
  gate: { type: 'string' },
  'gate-frontend-downloads': { type: 'boolean' },
  'startup-timeout': { type: 'string' },
  restart: { type: 'string' },
  'stop-timeout': { type: 'string' },
  'probe-interval': { type: 'string' },
  'probe-timeout': { type: 'string' },
  'probe-misses': { type: 'string' },
  'max-restarts': { type: 'string' },
  'grace-period': { type: 'string' },
  output: { type: 'string', short: 'o' },
  to: { type: 'string' },
  workflow: { type: 'string' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

type FlagValue<O> = O extends { readonly type: 'boolean' } ? boolean : string;

/** The parsed flags, as util.parseArgs returns them for OPTIONS; a flag not given is undefined. */
export type Flags = { readonly [K in keyof typeof OPTIONS]?: FlagValue<(typeof OPTIONS)[K]> | undefined };
