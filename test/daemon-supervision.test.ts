import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processAlive } from '../src/daemon/process-group.js';
import { type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { freePort, killAll, readRecord, startRun, STUB, waitFor, type RunningDaemon } from './support/daemon-harness.js';
import { rawRequest } from './support/http-get.js';
import { jsonLines } from './support/json-lines.js';
import { addModel } from './support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox | undefined;

afterEach(async () => {
  await killAll();
});

async function stub(s: Sandbox, ...extra: string[]): Promise<{ args: string[]; record: string }> {
  const port = await freePort();
  const record = path.join(s.dir, `stub-${port}.json`);
  return { args: [process.execPath, STUB, '--listen', '127.0.0.1', '--port', String(port), '--stub-record', record, '--stub-models-dir', s.models, ...extra], record };
}

async function replaceManifest(s: Sandbox, models: readonly Record<string, unknown>[]): Promise<void> {
  const tmp = path.join(s.dir, '.manifest.json.swp');
  await writeFile(tmp, JSON.stringify({ version: 1, models }, null, 2));
  await rename(tmp, s.manifest);
}

const readyz = async (d: RunningDaemon): Promise<{ status: number; body: string } | undefined> => d.get('/readyz');
const childStarts = (d: RunningDaemon): number => jsonLines(d.stderr()).filter((r) => r.msg === 'child started').length;

describe('giving up, and exit codes that are never modelsync\'s own', () => {
  it('gives up after --max-restarts starts that never became healthy and exits 3', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    // Crashes before it ever listens: no start becomes healthy.
    const s = await stub(sb, '--stub-start-delay-ms', '60000', '--stub-crash-after-ms', '50', '--stub-exit-code', '1');
    const d = startRun(['--max-restarts', '3', '--', ...s.args], sb.env({ MODELSYNC_RESTART_BASE_MS: '20', MODELSYNC_RESTART_MAX_MS: '40' }), await freePort(), [s.record]);
    expect((await d.exited).code).toBe(3);
    expect(childStarts(d)).toBe(3);
    expect(jsonLines(d.stderr())).toContainEqual(expect.objectContaining({ level: 50, starts: 3, code: 1 }));
  });

  it('MODELSYNC_MAX_RESTARTS sets the same limit; a child that answered starts the count over', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    // Answers, then crashes: each start became healthy, so 2 is never reached in a row.
    const s = await stub(sb, '--stub-crash-after-ms', '1000', '--stub-exit-code', '1');
    const d = startRun(['--', ...s.args], sb.env({ MODELSYNC_MAX_RESTARTS: '2', MODELSYNC_RESTART_BASE_MS: '20', MODELSYNC_RESTART_MAX_MS: '40', MODELSYNC_DEGRADED_AFTER: '100' }), await freePort(), [s.record]);
    await waitFor('a third start', () => childStarts(d) >= 3);
    expect(d.child.exitCode).toBeNull();
    d.signal('SIGTERM');
    await d.exited;
  });

  it('reports a child that exits 2 under --restart never as 3, not as a bad manifest', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    const s = await stub(sb, '--stub-crash-after-ms', '100', '--stub-exit-code', '2');
    const d = startRun(['--restart', 'never', '--', ...s.args], sb.env(), await freePort(), [s.record]);
    expect((await d.exited).code).toBe(3);
    expect(jsonLines(d.stderr())).toContainEqual(expect.objectContaining({ msg: 'ComfyUI exited', code: 2 }));
  });

  it('says in a sentence why it is not ready while ComfyUI restarts', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    const s = await stub(sb, '--stub-crash-after-ms', '100', '--stub-exit-code', '1');
    const d = startRun(['--', ...s.args], sb.env({ MODELSYNC_RESTART_BASE_MS: '30000' }), await freePort(), [s.record]);
    const r = await waitFor('/readyz during the backoff', async () => {
      const got = await readyz(d);
      return got?.body.includes('restarting') ? got : undefined;
    });
    expect(r.status).toBe(503);
    expect(r.body).toMatch(/^not ready: ComfyUI is restarting after exit code 1, next start in (29|30) s\n$/);
    expect((await d.status()) as unknown).toMatchObject({ ready: false, readiness: expect.stringMatching(/^ComfyUI is restarting after exit code 1/) as unknown, comfyui: { phase: 'backoff' } });
  });
});

describe('stopping', () => {
  it('stops a SIGSTOPped ComfyUI at once: SIGCONT goes with the SIGTERM', { timeout: 40_000 }, async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    const s = await stub(sb);
    const d = startRun(['--stop-timeout', '120', '--', ...s.args], sb.env(), await freePort(), [s.record]);
    await waitFor('/readyz', async () => (await readyz(d))?.status === 200);
    const rec = await waitFor('the stub record', () => readRecord(s.record));
    process.kill(rec.pid, 'SIGSTOP');
    d.signal('SIGTERM');
    // The stub's own SIGTERM handler ran (exit 0); a SIGKILL after 120 s would be 137.
    expect(await d.exited).toEqual({ code: 0, signal: null });
    expect(d.stdout()).toContain('Stopped server');
    expect(processAlive(rec.pid)).toBe(false);
  });
});

describe('readiness once ComfyUI serves', () => {
  it('stays ready while an added required model downloads, and drops when a model it was started with is gone', async () => {
    sb = await sandbox(hub.endpoint);
    const first = addModel(hub, 30_000);
    const added = addModel(hub, 600_000);
    hub.setFaults(added.sha256, { bytesPerSecond: 60_000 });
    const a = { source: first.uri, dest: 'checkpoints/a.safetensors' };
    await sb.writeManifest([a]);
    const s = await stub(sb);
    const d = startRun(['--', ...s.args], sb.env({ MODELSYNC_WATCH_DEBOUNCE_MS: '50' }), await freePort(), [s.record]);
    await waitFor('/readyz', async () => (await readyz(d))?.status === 200);

    // Every node sees this edit at once: none of them may stop serving for it.
    await replaceManifest(sb, [a, { source: added.uri, dest: 'checkpoints/added.safetensors' }]);
    await waitFor('the added model to download', async () => (await d.status()).entries.find((e) => e.dest === 'checkpoints/added.safetensors')?.state === 'downloading');
    expect((await readyz(d))?.status).toBe(200);
    const during = await d.status();
    expect(during.ready).toBe(true);
    expect(during.entries.find((e) => e.dest === 'checkpoints/added.safetensors')).toMatchObject({ required: true, verified: false, state: 'downloading' });
    expect((await d.get('/metrics'))?.body).toMatch(/^modelsync_ready 1$/m);
    expect((await d.get('/metrics'))?.body).toMatch(/^modelsync_entries\{state="downloading"\} 1$/m);
    await waitFor('the added model', async () => (await d.status()).entries.every((e) => e.verified), 30_000);
    // One word for "in place", whether it was found or fetched.
    expect((await d.status()).entries.map((e) => e.state)).toEqual(['present', 'present']);

    // A model ComfyUI was started with disappears: not ready, and the sentence says which.
    await rm(path.join(sb.models, a.dest));
    const gone = await readyz(d);
    expect(gone?.status).toBe(503);
    expect(gone?.body).toBe('not ready: 1 model ComfyUI was started with is gone from the models dir: checkpoints/a.safetensors\n');
    expect(((await d.status()) as unknown as { comfyui: { modelsGone: string[] } }).comfyui.modelsGone).toEqual([a.dest]);
    // A resync puts it back from the store; ready again.
    const resync = await rawRequest(`${d.controlUrl}/resync`, { method: 'POST', timeoutMs: 30_000 });
    expect(resync.status).toBe(200);
    expect((await readyz(d))?.status).toBe(200);

    // An entry removed from the manifest is not a model gone missing.
    await replaceManifest(sb, [{ source: added.uri, dest: 'checkpoints/added.safetensors' }]);
    await waitFor('the edit to be in force', async () => (await d.status()).entries.length === 1);
    await rm(path.join(sb.models, a.dest), { force: true });
    expect((await readyz(d))?.status).toBe(200);
  });
});
