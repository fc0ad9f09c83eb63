import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandHelp, mainUsage } from '../src/cli-help.js';
import { OPTIONS, type Flags } from '../src/cli-options.js';
import { commandNames } from '../src/cli.js';
import { loadConfig, type Config } from '../src/config.js';
import { comfyUrlFromArgs } from '../src/daemon/health-probe.js';
import { START_CONNECTIONS, startLevel } from '../src/transfer/host-limit.js';

type FlagName = keyof typeof OPTIONS;

/**
 * What a help text claims about one flag, parsed from the printed pages (so a default or a
 * variable written into a flag's free text is held to the config as well as the table's fields).
 */
interface Claim {
  readonly line: string;
  readonly defaults: string[];
  readonly env: string[];
  readonly envMs: boolean;
}

const VAR = /\b(?:MODELSYNC|HF|AWS)_[A-Z0-9_]+\b/g;

function claimsOf(page: string): Map<FlagName, Claim> {
  const out = new Map<FlagName, Claim>();
  for (const line of page.split('\n')) {
    const m = /^ {2}--([a-z0-9-]+)\b/.exec(line);
    if (!m) continue;
    const name = m[1] as FlagName;
    const envClause = /\benv ((?:[A-Z][A-Z0-9_]*)(?: \/ [A-Z][A-Z0-9_]*)*)( in milliseconds)?/.exec(line);
    out.set(name, {
      line,
      defaults: [...line.matchAll(/\bdefault:? ([^\s;,)]+)/g)].map((d) => d[1] as string),
      env: [...line.matchAll(VAR)].map((v) => v[0]),
      envMs: envClause?.[2] !== undefined,
    });
    // Every variable a line names is in its `env` clause: none hides in the free text.
    expect([...line.matchAll(VAR)].map((v) => v[0]), line).toEqual(envClause?.[1]?.split(' / ') ?? []);
  }
  return out;
}

/** A value for each flag that says something, unlike its default (flag form; true: a switch). */
const SAMPLES: Partial<Record<FlagName, string | true>> = {
  manifest: 'other.yaml',
  'models-dir': 'other-models',
  'store-dir': 'other-store',
  'state-dir': 'other-state',
  'log-level': 'debug',
  'log-format': 'pretty',
  'child-logs': 'json',
  connections: '7',
  'host-connections': '9',
  'chunk-size': '8M',
  'min-rate': '1K',
  control: '127.0.0.1:9999',
  offline: true,
  'keep-removed': true,
  's3-endpoint': 'http://127.0.0.1:9000',
  's3-path-style': true,
  'comfy-url': 'http://127.0.0.1:8288',
  'startup-timeout': '7',
  restart: 'never',
  'stop-timeout': '7',
  'probe-interval': '7',
  'probe-timeout': '3',
  'probe-misses': '7',
  'max-restarts': '7',
  gate: '127.0.0.1:8190',
  'gate-frontend-downloads': true,
  'grace-period': '7',
};

/** Flags that need another to be given at all. */
const NEEDS: Partial<Record<FlagName, Flags>> = { 'gate-frontend-downloads': { gate: '127.0.0.1:8190' } };

let dir = '';
let models = '';
let baseEnv: NodeJS.ProcessEnv = {};

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-help-'));
  models = path.join(dir, 'models');
  // HOME in the sandbox: no token file of the machine's is read; XDG_STATE_HOME for the state dir's default.
  baseEnv = { HOME: dir, XDG_STATE_HOME: path.join(dir, 'xdg-state') };
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The config without what only the environment's own text decides (the children's copy of it). */
function configOf(flags: Flags, env: NodeJS.ProcessEnv): Omit<Config, 'childEnv'> {
  return Object.fromEntries(Object.entries(loadConfig(flags, { ...baseEnv, ...env }, false)).filter(([k]) => k !== 'childEnv')) as Omit<Config, 'childEnv'>;
}

function baseFlags(without: FlagName): Flags {
  const flags: Record<string, string | boolean | undefined> = { 'models-dir': models, ...NEEDS[without] };
  delete flags[without];
  return flags as Flags;
}

function allPages(): string[] {
  const names = commandNames();
  return [mainUsage(names.map((name) => ({ name, summary: '' }))), ...names.map((n) => commandHelp(n) ?? '')];
}

describe('help texts against the config', () => {
  it('every page states the same text for a flag (one source)', () => {
    const seen = new Map<FlagName, string>();
    for (const page of allPages()) {
      for (const [name, claim] of claimsOf(page)) {
        expect(claim.line, name).toBe(seen.get(name) ?? claim.line);
        seen.set(name, claim.line);
      }
    }
    // --version is `modelsync --version`, on the main page only by name.
    expect([...seen.keys()].sort()).toEqual(Object.keys(OPTIONS).filter((f) => f !== 'version').sort());
  });

  it('a stated default is what the config takes when neither the flag nor a variable is given', () => {
    const checked: string[] = [];
    for (const page of allPages()) {
      for (const [name, claim] of claimsOf(page)) {
        for (const raw of claim.defaults) {
          const value = raw.replace(/^DIR\b/, models).replace(/^\$XDG_STATE_HOME\b/, baseEnv.XDG_STATE_HOME ?? '');
          expect(configOf({ ...baseFlags(name), [name]: value }, {}), `${name}: default ${raw}`).toEqual(configOf(baseFlags(name), {}));
          // And it is not what any other value gives: the comparison can fail.
          const sample = SAMPLES[name];
          expect(sample, `${name} states a default: give it a sample`).toBeDefined();
          expect(configOf({ ...baseFlags(name), [name]: sample }, {}), `${name}: ${String(sample)}`).not.toEqual(configOf(baseFlags(name), {}));
          checked.push(name);
        }
      }
    }
    expect(checked).toContain('connections');
    expect(checked).toContain('probe-interval');
  });

  it('a stated variable is read when the flag is not given, and means what the flag means', () => {
    const checked: string[] = [];
    for (const page of allPages()) {
      for (const [name, claim] of claimsOf(page)) {
        for (const variable of claim.env) {
          const sample = SAMPLES[name];
          expect(sample, `${name} states ${variable}: give it a sample`).toBeDefined();
          const envValue = sample === true ? '1' : claim.envMs ? String(Number(sample) * 1000) : String(sample);
          const viaFlag = configOf({ ...baseFlags(name), [name]: sample }, {});
          expect(configOf(baseFlags(name), { [variable]: envValue }), `${name}: ${variable}=${envValue}`).toEqual(viaFlag);
          // The comparison can fail: the sample is not what the flag's absence gives.
          expect(viaFlag, `${name}: ${String(sample)}`).not.toEqual(configOf({ 'models-dir': models, ...NEEDS[name] }, {}));
          checked.push(variable);
        }
      }
    }
    expect(checked).toContain('MODELSYNC_PROBE_TIMEOUT_MS');
    expect(checked).toContain('AWS_ENDPOINT_URL');
  });

  it('what a text says beyond the config holds where it is decided', () => {
    const lines = claimsOf(commandHelp('run') ?? '');
    expect(lines.get('host-connections')?.line).toContain(`starts at half of --connections (at least ${START_CONNECTIONS}),`);
    expect(startLevel(64)).toBe(32);
    expect(lines.get('comfy-url')?.line).toContain(`else ${comfyUrlFromArgs([]).replace(/^http:\/\//, '')})`);
  });
});
