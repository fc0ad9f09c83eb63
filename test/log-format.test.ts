import { spawn } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, FAKE_HF_TOKEN, runCli, type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { jsonLines } from './support/json-lines.js';
import { addModel } from './support/models.js';

/** An SGR sequence (colour, bold): what NO_COLOR turns off. Cursor controls are not colours. */
const SGR = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`);

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;

beforeEach(async () => {
  sb = await sandbox(hub.endpoint);
  const m = addModel(hub, 20_000);
  await sb.writeManifest([{ source: m.uri, dest: 'loras/a.safetensors' }]);
});
afterEach(async () => {
  await sb.cleanup();
});

/** `modelsync ARGS` on a pseudo-terminal (util-linux script): what a person at a shell sees. */
function onTerminal(args: readonly string[], env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const command = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { env: { ...env, TERM: 'xterm-256color' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

describe('log format', () => {
  it('is human-readable and coloured on a terminal', async () => {
    const r = await onTerminal(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(r.output).toMatch(/INFO.*published/);
    expect(r.output).toMatch(SGR);
    expect(r.output).not.toContain('"level":');
    expect(r.output).not.toContain(FAKE_HF_TOKEN);
  });

  it('honours NO_COLOR on a terminal', async () => {
    const r = await onTerminal(['sync'], sb.env({ NO_COLOR: '1' }));
    expect(r.code).toBe(0);
    expect(r.output).toMatch(/INFO.*published/);
    expect(r.output).not.toMatch(SGR);
  });

  it('is JSON lines when not on a terminal, or when asked for on one', async () => {
    const piped = await runCli(['sync'], sb.env());
    expect(piped.code).toBe(0);
    expect(jsonLines(piped.stderr)).toContainEqual(expect.objectContaining({ msg: 'published', dest: 'loras/a.safetensors' }));
    await sb.cleanup();
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([{ source: addModel(hub, 20_000).uri, dest: 'loras/b.safetensors' }]);
    const forced = await onTerminal(['sync', '--log-format', 'json'], sb.env());
    expect(forced.code).toBe(0);
    // On a fresh line of the terminal: the progress bar is erased before a record.
    expect(forced.output).toMatch(new RegExp(`(^|\\r${String.fromCharCode(27)}\\[K)\\{"level":30,.*"msg":"published"\\}\\r?$`, 'm'));
  });

  it('is pretty without colours when asked for off a terminal, and refuses an unknown format', async () => {
    const r = await runCli(['sync'], sb.env({ MODELSYNC_LOG_FORMAT: 'pretty' }));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/INFO.*published/);
    expect(r.stderr).not.toMatch(SGR);
    const bad = await runCli(['sync', '--log-format', 'xml'], sb.env());
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--log-format must be/);
  });
});
