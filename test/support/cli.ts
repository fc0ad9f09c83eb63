import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = path.join(REPO_ROOT, 'bin', 'modelsync.js');

/** Recognisable fake secrets: every test output is scanned for them. */
export const FAKE_HF_TOKEN = 'hf_TESTSECRETtokenDoNotLeak0123456789';
export const FAKE_AWS_SECRET = 'AWSSECRETdoNotLeak/0123456789abcdefXYZ';
export const FAKE_SOURCE_TOKEN = 'SRCTOKENdoNotLeak0123456789';
export const ALL_FAKE_SECRETS = [FAKE_HF_TOKEN, FAKE_AWS_SECRET, FAKE_SOURCE_TOKEN];

export interface Sandbox {
  readonly dir: string;
  readonly models: string;
  readonly state: string;
  readonly manifest: string;
  /** A scrubbed environment: nothing from the machine but PATH, with the fake secrets set. */
  env(extra?: Record<string, string>): Record<string, string>;
  writeManifest(models: readonly Record<string, unknown>[], extra?: Record<string, unknown>): Promise<string>;
  cleanup(): Promise<void>;
}

export async function sandbox(hubEndpoint?: string): Promise<Sandbox> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-test-'));
  const models = path.join(dir, 'models');
  const state = path.join(dir, 'state');
  await mkdir(models, { recursive: true });
  const manifest = path.join(dir, 'manifest.json');
  return {
    dir,
    models,
    state,
    manifest,
    env(extra = {}) {
      return {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: dir,
        MODELSYNC_STATE_DIR: state,
        MODELSYNC_MODELS_DIR: models,
        MODELSYNC_MANIFEST: manifest,
        MODELSYNC_LOG_LEVEL: 'info',
        // Never the default 127.0.0.1:8189: a developer's own daemon must not answer tests.
        MODELSYNC_CONTROL: '127.0.0.1:1',
        MODELSYNC_RETRY_BASE_MS: '20',
        MODELSYNC_IDLE_TIMEOUT_MS: '2000',
        HF_TOKEN: FAKE_HF_TOKEN,
        AWS_ACCESS_KEY_ID: 'AKIATESTDONOTLEAK',
        AWS_SECRET_ACCESS_KEY: FAKE_AWS_SECRET,
        MODELSYNC_HTTP_TOKENS: `example.invalid=${FAKE_SOURCE_TOKEN}`,
        ...(hubEndpoint === undefined ? {} : { HF_ENDPOINT: hubEndpoint }),
        ...extra,
      };
    },
    async writeManifest(entries, extra = {}) {
      await writeFile(manifest, JSON.stringify({ version: 1, ...extra, models: entries }, null, 2));
      return manifest;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Spawn the built CLI and collect its exit status and output. */
export function runCli(args: readonly string[], env: Record<string, string>, opts: { timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Fail if any fake secret appears in the given texts. */
export function leakedSecrets(...texts: string[]): string[] {
  return ALL_FAKE_SECRETS.filter((s) => texts.some((t) => t.includes(s)));
}
