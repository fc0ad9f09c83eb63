import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { commandHelp, helpTopics } from '../src/cli-help.js';
import { OPTIONS } from '../src/cli-options.js';
import { commandNames } from '../src/cli.js';
import { FAKE_HF_TOKEN, runCli, sandbox, type Sandbox } from './support/cli.js';
import { freePort, killAll, startRun, waitFor } from './support/daemon-harness.js';
import { startHub, type Hub } from './support/hub.js';
import { addModel, exists, fileSha256 } from './support/models.js';

let hub: Hub;
let sb: Sandbox | undefined;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
});
afterAll(async () => {
  await hub.close();
});
afterEach(async () => {
  await killAll();
  await sb?.cleanup();
  sb = undefined;
});

/** The sandbox's environment without the models dir and manifest: only what reaches a daemon. */
function bare(s: Sandbox, extra: Record<string, string> = {}): Record<string, string> {
  const env = s.env(extra);
  delete env.MODELSYNC_MODELS_DIR;
  delete env.MODELSYNC_MANIFEST;
  return env;
}

describe('resync and status need only --control', () => {
  it('asks the running daemon with --control alone; without a daemon it needs the models dir', async () => {
    const s = (sb = await sandbox(hub.endpoint));
    const m = addModel(hub, 30_000);
    await s.writeManifest([{ source: m.uri, dest: 'loras/a.safetensors' }]);
    const port = await freePort();
    const d = startRun([], s.env(), port);
    await waitFor('the daemon to be ready', async () => (await d.get('/readyz'))?.status === 200);

    const r = await runCli(['resync', '--control', `127.0.0.1:${port}`], bare(s));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`resync by the daemon at http://127.0.0.1:${port}`);
    const viaEnv = await runCli(['resync', '--json'], bare(s, { MODELSYNC_CONTROL: `127.0.0.1:${port}` }));
    expect(viaEnv.code).toBe(0);
    expect((JSON.parse(viaEnv.stdout) as { ok: boolean }).ok).toBe(true);
    const status = await runCli(['status', '--control', `127.0.0.1:${port}`], bare(s));
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^present\s+loras\/a\.safetensors/m);

    d.signal('SIGTERM');
    await d.exited;
    // No daemon: the in-process fallback is a sync, which needs to know where.
    const alone = await runCli(['resync', '--control', `127.0.0.1:${port}`], bare(s));
    expect(alone.code).toBe(2);
    expect(alone.stderr).toMatch(/no daemon answers on 127\.0\.0\.1:\d+; syncing in-process\nmodelsync: no models dir/);
  });
});

describe('COMMAND --help', () => {
  it("prints that command's own usage, flags and examples, without needing anything set up", async () => {
    for (const name of commandNames()) {
      const r = await runCli([name, '--help'], { PATH: process.env.PATH ?? '/usr/bin:/bin' });
      expect(r.code, name).toBe(0);
      expect(r.stdout, name).toMatch(new RegExp(`^usage: modelsync ${name}\\b`));
      expect(r.stdout, name).toMatch(/\nflags:\n {2}--/);
      expect(r.stdout, name).toMatch(/\nexamples:\n {2}modelsync /);
      expect((await runCli(['help', name], {})).stdout, name).toBe(r.stdout);
    }
    const run = await runCli(['run', '-h'], {});
    for (const flag of ['--max-restarts N', '--probe-timeout S', '--child-logs MODE', '--restart POLICY']) expect(run.stdout).toContain(flag);
    // After CMD, --help is CMD's own: modelsync does not answer it.
    const s = (sb = await sandbox());
    await s.writeManifest([]);
    const child = await runCli(['run', '--control', `127.0.0.1:${await freePort()}`, '--startup-timeout', '0', '--restart', 'never', '--', process.execPath, '-e', "console.log(process.argv.includes('--help') ? 'child got --help' : 'no')", '--', '--help'], s.env());
    expect(child.code).toBe(0);
    expect(child.stdout).toContain('child got --help');
    expect(child.stdout).not.toContain('usage: modelsync');
    const unknown = await runCli(['help', 'nope'], {});
    expect(unknown.code).toBe(2);
  });

  it('has a page for every command, and every flag is on one', () => {
    expect(helpTopics().sort()).toEqual(commandNames().sort());
    const pages = commandNames().map((n) => commandHelp(n) ?? '').join('\n');
    // --version is `modelsync --version`, no command's.
    for (const flag of Object.keys(OPTIONS).filter((f) => f !== 'version')) expect(pages, flag).toContain(`--${flag}`);
  });
});

describe('a flag the command does not take', () => {
  it('is bad usage (exit 2, one line naming it) before anything runs: plan --update-lock leaves the lock file as it was', async () => {
    const s = (sb = await sandbox(hub.endpoint));
    const m = addModel(hub, 30_000);
    await s.writeManifest([{ source: m.uri, dest: 'loras/a.safetensors' }]);
    const lock = path.join(s.dir, 'manifest.lock.json');
    await writeFile(lock, '{"not": "touched"}\n');
    for (const args of [['plan', '--update-lock'], ['status', '--update-lock'], ['verify', '--update-lock'], ['gc', '--manifest', 'x.yaml'], ['sync', '--full'], ['plan', '--connections', '4'], ['ensure', '--keep-removed', 'hf://a/b/c.safetensors=loras/c.safetensors']]) {
      const r = await runCli(args, s.env());
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toContain(`--${(args[1] as string).slice(2)}`);
    }
    expect(await readFile(lock, 'utf8')).toBe('{"not": "touched"}\n');
    expect(await exists(path.join(s.models, 'loras/a.safetensors'))).toBe(false);
    // The command's own flags still pass (without the stand-in lock, which is no lock).
    await rm(lock);
    const plan = await runCli(['plan', '--refresh', '--json'], s.env());
    expect(plan.code, plan.stderr).toBe(0);
    // A warm sync (the cached manifest, answered by the bundle) refuses it the same way.
    expect((await runCli(['sync'], s.env())).code).toBe(0);
    const warm = await runCli(['sync', '--full'], s.env());
    expect(warm.code).toBe(2);
    expect(warm.stderr).toContain('--full');
  });
});

describe('a models dir that does not exist yet', () => {
  it('is created, with its parents, by sync (said on stderr); a command that only looks refuses it', async () => {
    const s = (sb = await sandbox(hub.endpoint));
    const m = addModel(hub, 20_000);
    await s.writeManifest([{ source: m.uri, dest: 'loras/a.safetensors' }]);
    const models = path.join(s.dir, 'new', 'deep', 'models');
    const plan = await runCli(['plan'], s.env({ MODELSYNC_MODELS_DIR: models }));
    expect(plan.code).toBe(2);
    expect(plan.stderr).toMatch(/models dir .*new\/deep\/models does not exist \(a sync creates it\)/);
    expect(await exists(path.join(s.dir, 'new'))).toBe(false);

    const r = await runCli(['sync'], s.env({ MODELSYNC_MODELS_DIR: models }));
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`modelsync: created ${models}\n`);
    expect(await fileSha256(path.join(models, 'loras', 'a.safetensors'))).toBe(m.sha256);
    const again = await runCli(['sync'], s.env({ MODELSYNC_MODELS_DIR: models }));
    expect(again.stderr).not.toContain('created');
  });

  it('is not created for a manifest that is refused, nor when a file stands in its place', async () => {
    const s = (sb = await sandbox(hub.endpoint));
    await writeFile(s.manifest, JSON.stringify({ version: 1, models: [{ source: 'ftp://x/y', dest: 'loras/a.safetensors' }] }));
    const models = path.join(s.dir, 'typo-models');
    const bad = await runCli(['sync'], s.env({ MODELSYNC_MODELS_DIR: models }));
    expect(bad.code).toBe(2);
    expect(await exists(models)).toBe(false);
    const file = path.join(s.dir, 'a-file');
    await writeFile(file, 'x');
    const notDir = await runCli(['sync'], s.env({ MODELSYNC_MODELS_DIR: file }));
    expect(notDir.code).toBe(2);
    expect(notDir.stderr).toMatch(/is not a directory/);
    expect(await readdir(s.dir)).not.toContain('typo-models');
  });

  it('is created by run too, said in a log record', async () => {
    const s = (sb = await sandbox(hub.endpoint));
    await s.writeManifest([]);
    const models = path.join(s.dir, 'fresh', 'models');
    const d = startRun([], s.env({ MODELSYNC_MODELS_DIR: models }), await freePort());
    await waitFor('the daemon to be ready', async () => (await d.get('/readyz'))?.status === 200);
    expect(await exists(models)).toBe(true);
    expect(d.stderr()).toContain(`"msg":"created ${models}"`);
    d.signal('SIGTERM');
    await d.exited;
  });
});
