import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, type Sandbox } from './support/cli.js';
import { freePort, killAll, startRun, waitFor, type RunningDaemon } from './support/daemon-harness.js';
import { addModel, fileSha256, sha256 } from './support/models.js';
import { makeSafetensors } from './support/hub.js';
import { useHubSandbox } from './support/hub-sandbox.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox | undefined;

afterEach(async () => {
  await killAll();
});

/** Replace the manifest the way editors and `kubectl` do: write aside, rename over. */
async function replaceManifest(s: Sandbox, models: readonly Record<string, unknown>[]): Promise<void> {
  const tmp = path.join(s.dir, '.manifest.json.swp');
  await writeFile(tmp, JSON.stringify({ version: 1, models }, null, 2));
  await rename(tmp, s.manifest);
}

const ready = (d: RunningDaemon) => async (): Promise<boolean> => (await d.get('/readyz'))?.status === 200;

describe('modelsync run (service mode, no child)', () => {
  it('a manifest edit during a sync: that sync finishes whole, then the edit is applied', async () => {
    sb = await sandbox(hub.endpoint);
    const slow = addModel(hub, 900_000);
    const added = addModel(hub, 20_000);
    hub.setFaults(slow.sha256, { bytesPerSecond: 300_000 });
    const entrySlow = { source: slow.uri, dest: 'checkpoints/slow.safetensors', required: false };
    await sb.writeManifest([entrySlow]);
    const d = startRun([], sb.env({ MODELSYNC_WATCH_DEBOUNCE_MS: '50' }), await freePort());
    await waitFor('the control API', async () => (await d.get('/healthz')) !== undefined);
    await waitFor('the slow download to be under way', async () => (await d.status()).entries.find((e) => e.dest === entrySlow.dest)?.state === 'downloading');
    await replaceManifest(sb, [entrySlow, { source: added.uri, dest: 'loras/added.safetensors', required: false }]);
    const slowPath = path.join(sb.models, entrySlow.dest);
    // Nothing half-published meanwhile: the dest is absent or complete whenever we look.
    await waitFor('the added entry to be synced', async () => {
      const got = await readFile(slowPath).catch(() => undefined);
      if (got !== undefined) expect(sha256(got)).toBe(slow.sha256);
      return (await d.status()).entries.find((e) => e.dest === 'loras/added.safetensors')?.verified;
    }, 30_000);
    expect(await fileSha256(slowPath)).toBe(slow.sha256);
    expect(await fileSha256(path.join(sb.models, 'loras/added.safetensors'))).toBe(added.sha256);
    // The entry shows verified as soon as it is published; the sync that did it ends just after.
    await waitFor('the sync of the edit to end', async () => (await d.status()).sync.last?.reason === 'manifest changed');
    hub.clearFaults();
  });

  it('picks up a manifest edit; rejects an invalid one and keeps the last good manifest', async () => {
    sb = await sandbox(hub.endpoint);
    const a = addModel(hub, 20_000);
    const b = addModel(hub, 30_000);
    const entryA = { source: a.uri, dest: 'checkpoints/a.safetensors' };
    await sb.writeManifest([entryA]);
    // A stand-in systemd-notify on PATH records what it was asked to tell systemd.
    const fakeBin = path.join(sb.dir, 'fakebin');
    const notifyLog = path.join(sb.dir, 'notify.log');
    await mkdir(fakeBin);
    await writeFile(path.join(fakeBin, 'systemd-notify'), `#!/bin/sh\necho "$NOTIFY_SOCKET $*" >> '${notifyLog}'\n`);
    await chmod(path.join(fakeBin, 'systemd-notify'), 0o755);
    const env = sb.env({ MODELSYNC_WATCH_DEBOUNCE_MS: '50', NOTIFY_SOCKET: '/run/fake-notify', PATH: `${fakeBin}:${process.env.PATH ?? '/usr/bin:/bin'}` });
    const d = startRun([], env, await freePort());
    await waitFor('/readyz', ready(d));
    // Let the startup sync of every entry finish before editing: the edit must be what syncs b.
    await waitFor('the startup sync', async () => (await d.status()).sync.last?.reason === 'startup: all models');
    // Type=notify: READY=1 once the first full sync is done, sent on behalf of the daemon's pid.
    const notified = await waitFor('READY=1 for systemd', async () => (await readFile(notifyLog, 'utf8').catch(() => '')).split('\n').find((l) => l.includes('--ready')));
    expect(notified).toBe(`/run/fake-notify --pid=${d.child.pid} --ready --status=1/1 entries verified`);

    await replaceManifest(sb, [entryA, { source: b.uri, dest: 'loras/b.safetensors', required: false }]);
    await waitFor('b to be synced after the edit', async () => (await d.status()).entries.find((e) => e.dest === 'loras/b.safetensors')?.verified);
    expect(await fileSha256(path.join(sb.models, 'loras/b.safetensors'))).toBe(b.sha256);
    await waitFor('the sync of the edit to end', async () => (await d.status()).sync.last?.reason === 'manifest changed');

    // An invalid edit, written in place: reported, the previous manifest stays in force.
    await writeFile(sb.manifest, JSON.stringify({ version: 1, models: [{ source: 'ftp://example.org/x.bin', dest: '../escape.bin' }] }));
    const rejected = await waitFor('the invalid edit to be reported', async () => (await d.status()).manifest.error);
    expect(rejected).toMatch(/invalid manifest/);
    expect(rejected).toMatch(/models\[0\]\.dest/);
    const st = await d.status();
    expect(st.entries.map((e) => [e.dest, e.verified])).toEqual([
      ['checkpoints/a.safetensors', true],
      ['loras/b.safetensors', true],
    ]);
    expect((await d.get('/readyz'))?.status).toBe(200);
    expect((await d.get('/metrics'))?.body).toMatch(/^modelsync_manifest_valid 0$/m);
    expect(d.stderr()).toMatch(/manifest rejected; the last valid one stays in force/);

    // SIGHUP re-reads it: still invalid, still reported. Then a fix clears the report.
    d.signal('SIGHUP');
    await waitFor('the SIGHUP resync', async () => (await d.status()).sync.last?.reason === 'SIGHUP');
    expect((await d.status()).manifest.error).toMatch(/invalid manifest/);
    await replaceManifest(sb, [entryA]);
    await waitFor('the fixed manifest', async () => {
      const s = await d.status();
      return s.manifest.error === undefined && s.entries.length === 1;
    });

    // `modelsync status` reads the daemon's live view.
    const status = await runCli(['status', '--control', d.controlUrl.replace('http://', '')], sb.env());
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^daemon at http:\/\/127\.0\.0\.1:\d+: ready/);
    expect(status.stdout).toMatch(/checkpoints\/a\.safetensors/);

    d.signal('SIGTERM');
    // Service mode: a requested stop is a clean exit.
    expect((await d.exited).code).toBe(0);
    expect(leakedSecrets(d.stdout(), d.stderr())).toEqual([]);
  });

  it('`modelsync resync` asks the running daemon (branch revisions asked again), or syncs in-process when none runs', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 25_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    const port = await freePort();
    const d = startRun([], sb.env(), port);
    await waitFor('/readyz', ready(d));
    const file = path.join(sb.models, 'checkpoints/m.safetensors');
    expect(await fileSha256(file)).toBe(m.sha256);

    // A new commit on main: a resync re-resolves the branch and publishes the new content.
    const next = makeSafetensors(26_000, 424242);
    hub.pushFiles(m.repo, [{ path: m.path, content: next }]);
    const r = await runCli(['resync', '--control', `127.0.0.1:${port}`], sb.env());
    expect(r.stderr).not.toMatch(/internal error/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^resync by the daemon at http:\/\/127\.0\.0\.1:\d+\/resync$/m);
    expect(r.stdout).toMatch(/published +checkpoints\/m\.safetensors/);
    expect(await fileSha256(file)).toBe(sha256(next));

    // A failed resync says so and exits non-zero; the file in place stays.
    const third = makeSafetensors(27_000, 434343);
    hub.pushFiles(m.repo, [{ path: m.path, content: third }]);
    hub.setFaults(sha256(third), { status503: 1000 });
    const failed = await runCli(['resync', '--control', `127.0.0.1:${port}`], sb.env());
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/FAILED +checkpoints\/m\.safetensors: .*503/);
    expect(await fileSha256(file)).toBe(sha256(next));
    hub.clearFaults();

    d.signal('SIGTERM');
    await d.exited;
    const alone = await runCli(['resync', '--control', `127.0.0.1:${port}`], sb.env());
    expect(alone.stderr).toMatch(/no daemon answers on 127\.0\.0\.1:\d+; syncing in-process/);
    expect(alone.code).toBe(0);
    expect(await readFile(file)).toEqual(third);
    expect(leakedSecrets(r.stdout, r.stderr, failed.stdout, failed.stderr, alone.stdout, alone.stderr, d.stderr())).toEqual([]);
  });
});
