import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processAlive } from '../src/daemon/process-group.js';
import { leakedSecrets, type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { freePort, killAll, readRecord, startRun, STUB, waitFor, type RunningDaemon } from './support/daemon-harness.js';
import { rawRequest } from './support/http-get.js';
import { addModel } from './support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox | undefined;

afterEach(async () => {
  await killAll();
});

/** The stub's argv: its own port, a record of itself, our models dir for /object_info. */
async function stub(s: Sandbox, ...extra: string[]): Promise<{ args: string[]; record: string; port: number }> {
  const port = await freePort();
  const record = path.join(s.dir, `stub-${port}.json`);
  return { args: [process.execPath, STUB, '--listen', '127.0.0.1', '--port', String(port), '--stub-record', record, '--stub-models-dir', s.models, ...extra], record, port };
}

async function objectInfoCheckpoints(port: number): Promise<string[]> {
  const r = await rawRequest(`http://127.0.0.1:${port}/object_info/CheckpointLoaderSimple`);
  const info = JSON.parse(r.body.toString()) as { CheckpointLoaderSimple: { input: { required: { ckpt_name: [string[]] } } } };
  return info.CheckpointLoaderSimple.input.required.ckpt_name[0];
}

const ready = (d: RunningDaemon) => async (): Promise<boolean> => (await d.get('/readyz'))?.status === 200;

describe('modelsync run', () => {
  it('starts ComfyUI only once the required models are verified, then brings the optional ones in while it runs', async () => {
    sb = await sandbox(hub.endpoint);
    const req = addModel(hub, 150_000);
    const opt = addModel(hub, 200_000);
    hub.setFaults(req.sha256, { bytesPerSecond: 150_000 });
    // Slow enough that ComfyUI is up long before it is done (its download only starts after the spawn).
    hub.setFaults(opt.sha256, { bytesPerSecond: 40_000 });
    await sb.writeManifest([
      { source: req.uri, dest: 'checkpoints/required.safetensors' },
      { source: opt.uri, dest: 'checkpoints/optional.safetensors', required: false },
    ]);
    const s = await stub(sb);
    const control = await freePort();
    const env = sb.env({ MODELSYNC_CHILD_ENV_PASSTHROUGH: 'AWS_ACCESS_KEY_ID', NOTIFY_SOCKET: path.join(sb.dir, 'no-such-notify-socket') });
    const d = startRun(['--', ...s.args], env, control, [s.record]);

    // While the required model downloads: no ComfyUI, not ready.
    await waitFor('the required model to download', async () => {
      const st = await d.get('/status');
      return st !== undefined && (JSON.parse(st.body) as { entries: { dest: string; state: string }[] }).entries.some((e) => e.dest === 'checkpoints/required.safetensors' && e.state === 'downloading');
    });
    expect(await readRecord(s.record)).toBeUndefined();
    expect((await d.get('/readyz'))?.status).toBe(503);

    // The moment ComfyUI exists, the required file is complete in its folder; the optional is not there.
    const rec = await waitFor('ComfyUI to start', () => readRecord(s.record));
    expect(existsSync(path.join(sb.models, 'checkpoints/required.safetensors'))).toBe(true);
    expect(existsSync(path.join(sb.models, 'checkpoints/optional.safetensors'))).toBe(false);

    await waitFor('/readyz', ready(d));
    const early = await d.status();
    expect(early.entries.find((e) => e.dest === 'checkpoints/optional.safetensors')?.verified).toBe(false);
    expect(early.comfyui).toMatchObject({ phase: 'running', pid: rec.pid, restarts: 0 });
    expect(await objectInfoCheckpoints(s.port)).toEqual(['required.safetensors']);

    // Progressive readiness: the optional model appears in ComfyUI's folder once verified.
    await waitFor('the optional model', async () => (await d.status()).entries.every((e) => e.verified));
    expect(await objectInfoCheckpoints(s.port)).toEqual(['optional.safetensors', 'required.safetensors']);

    // The child's environment and argv carry no secret (pass-through is by explicit choice).
    expect(rec.env.HF_TOKEN).toBeUndefined();
    expect(rec.env.AWS_SECRET_ACCESS_KEY).toBeUndefined();
    expect(rec.env.MODELSYNC_HTTP_TOKENS).toBeUndefined();
    expect(rec.env.NOTIFY_SOCKET).toBeUndefined();
    expect(rec.env.AWS_ACCESS_KEY_ID).toBe('AKIATESTDONOTLEAK');
    expect(leakedSecrets(JSON.stringify(rec))).toEqual([]);
    expect(rec.pgid).toBe(rec.pid);

    const timeline = (await d.get('/metrics'))?.body ?? '';
    for (const phase of ['manifest_loaded', 'required_models_ready', 'comfyui_spawned', 'comfyui_answering']) expect(timeline).toMatch(new RegExp(`modelsync_cold_start_seconds\\{phase="${phase}"\\} \\d`));

    d.signal('SIGTERM');
    // The stub exits 0 on SIGTERM: that is the code passed on.
    expect(await d.exited).toEqual({ code: 0, signal: null });
    expect(processAlive(rec.pid)).toBe(false);
    expect(d.stdout()).toMatch(/^Starting server$/m);
    expect(d.stderr()).toMatch(/systemd-notify/);
    expect(leakedSecrets(d.stdout(), d.stderr())).toEqual([]);
  });

  it('exits 1 naming the required models it could not get, without starting ComfyUI', async () => {
    sb = await sandbox(hub.endpoint);
    const ok = addModel(hub, 10_000);
    await sb.writeManifest([
      { source: ok.uri, dest: 'checkpoints/fine.safetensors' },
      { source: 'hf://test-org/no-such-repo/model.safetensors', dest: 'checkpoints/missing.safetensors' },
    ]);
    const s = await stub(sb);
    const d = startRun(['--', ...s.args], sb.env(), await freePort(), [s.record]);
    expect((await d.exited).code).toBe(1);
    expect(d.stderr()).toMatch(/modelsync: not starting: 1 required model could not be had\n {2}checkpoints\/missing\.safetensors: .*no-such-repo/);
    expect(await readRecord(s.record)).toBeUndefined();
  });

  it('on SIGTERM during the required download: stops at once, keeps the partial for a resume, exits 128+15', async () => {
    sb = await sandbox(hub.endpoint);
    // Over SMALL_BLOB_BYTES: only leased downloads are resumable (small ones just start over).
    const big = addModel(hub, 2 * 1024 * 1024);
    hub.setFaults(big.sha256, { bytesPerSecond: 50_000 });
    await sb.writeManifest([{ source: big.uri, dest: 'checkpoints/big.safetensors' }]);
    const s = await stub(sb);
    const d = startRun(['--', ...s.args], sb.env(), await freePort(), [s.record]);
    const tmpDir = path.join(sb.models, '.modelsync-store', 'tmp');
    const partials = async (): Promise<string[]> => (await readdir(tmpDir).catch(() => [])).filter((f) => f.startsWith(`sha256-${big.sha256}.`));
    // Under way: the partial and its journal (what a resume starts from) are on disk.
    await waitFor('a partial with its journal', async () => (await partials()).some((f) => f.endsWith('.journal')));
    d.signal('SIGTERM');
    expect(await d.exited).toEqual({ code: 143, signal: null });
    expect(await readRecord(s.record)).toBeUndefined();
    expect((await partials()).map((f) => path.extname(f)).sort()).toEqual(['.journal', '.part']);
    expect(existsSync(path.join(sb.models, 'checkpoints/big.safetensors'))).toBe(false);
  });

  it('restarts a crashing ComfyUI with backoff and reports degraded when it keeps crashing', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    const s = await stub(sb, '--stub-crash-after-ms', '150', '--stub-spawn-grandchild');
    const env = sb.env({ MODELSYNC_RESTART_BASE_MS: '50', MODELSYNC_RESTART_MAX_MS: '200', MODELSYNC_DEGRADED_AFTER: '3' });
    const d = startRun(['--', ...s.args], env, await freePort(), [s.record]);
    await waitFor('/healthz to report degraded', async () => (await d.get('/healthz'))?.status === 503);
    const st = await d.status();
    expect(st.healthy).toBe(false);
    expect(st.comfyui?.degraded).toBe(true);
    expect(st.comfyui?.restarts).toBeGreaterThanOrEqual(3);
    expect((await d.get('/metrics'))?.body).toMatch(/^modelsync_comfyui_degraded 1$/m);
    expect(d.stderr()).toMatch(/"delayMs":50,.*\n(.*\n)*.*"delayMs":100,.*\n(.*\n)*.*"delayMs":200/);
    const rec = await readRecord(s.record);
    d.signal('SIGTERM');
    await d.exited;
    for (const pid of [rec?.pid, rec?.grandchildPid]) expect(processAlive(pid ?? 0)).toBe(false);
  });

  it('exits with the child\'s code under --restart never; CMD may follow the flags without "--"', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    const s = await stub(sb, '--stub-crash-after-ms', '100', '--stub-exit-code', '7');
    const d = startRun(['--restart', 'never', ...s.args], sb.env(), await freePort(), [s.record]);
    expect((await d.exited).code).toBe(7);
  });

  it('stops a ComfyUI that never answers (startup timeout) and fails', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    const s = await stub(sb, '--stub-hang');
    const d = startRun(['--restart', 'never', '--startup-timeout', '0.5', '--', ...s.args], sb.env(), await freePort(), [s.record]);
    // The stub exits 0 on our SIGTERM, but it was stopped for not answering: a failure, reported as
    // 3 (modelsync's 1 means a failed sync).
    expect((await d.exited).code).toBe(3);
    expect(d.stderr()).toMatch(/no answer within the startup timeout/);
  });

  it('on SIGTERM escalates to SIGKILL for a child that ignores it, exits 128+9 and leaves no orphan', async () => {
    sb = await sandbox(hub.endpoint);
    await sb.writeManifest([]);
    const s = await stub(sb, '--stub-ignore-sigterm', '--stub-spawn-grandchild');
    const d = startRun(['--stop-timeout', '1', '--', ...s.args], sb.env(), await freePort(), [s.record]);
    await waitFor('/readyz', ready(d));
    const rec = await waitFor('the stub record', async () => (await readRecord(s.record))?.grandchildPid ?? undefined);
    const stubPid = (await readRecord(s.record))?.pid ?? 0;
    d.signal('SIGTERM');
    expect(await d.exited).toEqual({ code: 137, signal: null });
    expect(d.stdout()).toMatch(/ignoring SIGTERM/);
    expect(d.stderr()).toMatch(/sending SIGKILL/);
    expect(processAlive(stubPid)).toBe(false);
    expect(processAlive(rec)).toBe(false);
  });
});
