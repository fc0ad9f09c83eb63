import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { comfyUrlFromArgs } from '../src/daemon/health-probe.js';
import { lineSplitter } from '../src/daemon/lines.js';
import { SyncRunner, type SyncOutcome } from '../src/daemon/sync-runner.js';
import { thrown } from './support/thrown.js';

describe('daemon helpers', () => {
  it('finds ComfyUI from its own argv', () => {
    expect(comfyUrlFromArgs(['main.py'])).toBe('http://127.0.0.1:8188');
    expect(comfyUrlFromArgs(['main.py', '--listen', '0.0.0.0', '--port', '8190'])).toBe('http://127.0.0.1:8190');
    expect(comfyUrlFromArgs(['main.py', '--listen', '--port', '9000'])).toBe('http://127.0.0.1:9000');
    expect(comfyUrlFromArgs(['main.py', '--listen', '10.0.0.5,::1', '--port=7000'])).toBe('http://10.0.0.5:7000');
    expect(comfyUrlFromArgs(['main.py', '--listen=::', '--tls-keyfile', 'k.pem', '--tls-certfile', 'c.pem'])).toBe('https://[::1]:8188');
    expect(comfyUrlFromArgs(['main.py', '--listen'])).toBe('http://127.0.0.1:8188');
  });

  it('splits output into lines across chunks, multi-byte characters included', () => {
    const lines: string[] = [];
    const s = lineSplitter((l) => lines.push(l));
    const text = Buffer.from('héllo\r\nwörld\npart');
    for (let i = 0; i < text.length; i++) s.write(text.subarray(i, i + 1));
    expect(lines).toEqual(['héllo', 'wörld']);
    s.end();
    expect(lines).toEqual(['héllo', 'wörld', 'part']);
  });

  it("keeps each line's own ending: CRLF split across chunks, a progress bar's bare CR, empty lines", () => {
    const got: [string, string][] = [];
    const s = lineSplitter((l, end) => got.push([l, end]));
    for (const chunk of ['a\r', '\nb\n', '\n', ' 10%\r 20%\r', '', 'c']) s.write(Buffer.from(chunk));
    expect(got).toEqual([
      ['a', '\r\n'],
      ['b', '\n'],
      ['', '\n'],
      [' 10%', '\r'],
      [' 20%', '\r'],
    ]);
    s.end();
    expect(got.slice(5)).toEqual([['c', '']]);
  });

  it('reads daemon settings from flags and env, refusing bad ones', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-units-'));
    try {
      const env = { HOME: dir, MODELSYNC_STATE_DIR: dir, MODELSYNC_RESTART_BASE_MS: '50', NOTIFY_SOCKET: '/run/notify' };
      const c = loadConfig({ 'models-dir': dir, 'stop-timeout': '1.5', 'startup-timeout': '0' }, env);
      expect(c.daemon).toMatchObject({ restart: 'on-failure', stopTimeoutMs: 1500, startupTimeoutMs: 0, restartBaseMs: 50, notifySocket: '/run/notify', comfyUrl: undefined });
      expect(loadConfig({ 'models-dir': dir }, { ...env, MODELSYNC_STOP_TIMEOUT: '3' }).daemon.stopTimeoutMs).toBe(3000);
      expect(thrown(() => loadConfig({ 'models-dir': dir, restart: 'sometimes' }, env))).toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('--restart') });
      expect(thrown(() => loadConfig({ 'models-dir': dir, 'stop-timeout': '-1' }, env))).toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('--stop-timeout') });
      expect(thrown(() => loadConfig({ 'models-dir': dir, 'comfy-url': 'localhost:8188' }, env))).toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('--comfy-url') });
      // Probing and giving up: 5 s apart, 5 s to answer, 3 misses (hung after 15 s), 10 starts.
      expect(c.daemon).toMatchObject({ probeIntervalMs: 5000, probeTimeoutMs: 5000, probeFailures: 3, maxRestarts: 10, childLogs: 'passthrough' });
      const flagged = loadConfig({ 'models-dir': dir, 'probe-interval': '2', 'probe-timeout': '0.5', 'probe-misses': '4', 'max-restarts': '0' }, env).daemon;
      expect(flagged).toMatchObject({ probeIntervalMs: 2000, probeTimeoutMs: 500, probeFailures: 4, maxRestarts: 0 });
      const fromEnv = loadConfig({ 'models-dir': dir }, { ...env, MODELSYNC_PROBE_TIMEOUT_MS: '800', MODELSYNC_MAX_RESTARTS: '4' }).daemon;
      expect(fromEnv).toMatchObject({ probeTimeoutMs: 800, maxRestarts: 4 });
      expect(thrown(() => loadConfig({ 'models-dir': dir, 'max-restarts': '-1' }, env))).toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('--max-restarts') });
      expect(thrown(() => loadConfig({ 'models-dir': dir, 'probe-timeout': '0' }, env))).toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('--probe-timeout') });
      expect(thrown(() => loadConfig({ 'models-dir': dir, 'child-logs': 'xml' }, env))).toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('--child-logs') });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('SyncRunner', () => {
  function controllable(): { runner: SyncRunner; runs: { reason: string; refresh: boolean; requiredOnly: boolean; finish: (ok: boolean) => void }[] } {
    const runs: { reason: string; refresh: boolean; requiredOnly: boolean; finish: (ok: boolean) => void }[] = [];
    const runner = new SyncRunner(
      (reason, refresh, requiredOnly) =>
        new Promise<SyncOutcome>((resolve) => {
          runs.push({ reason, refresh, requiredOnly, finish: (ok) => resolve({ ok, reason }) });
        }),
    );
    return { runner, runs };
  }
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

  it('runs one sync at a time; requests made meanwhile share the next one', async () => {
    const { runner, runs } = controllable();
    const first = runner.request('startup: required models', false, true);
    const a = runner.request('manifest changed');
    const b = runner.request('resync requested', true);
    await tick();
    expect(runs.map((r) => r.reason)).toEqual(['startup: required models']);
    runs[0]?.finish(true);
    expect(await first).toEqual({ ok: true, reason: 'startup: required models' });
    await tick();
    expect(runs).toHaveLength(2);
    expect(runs[1]).toMatchObject({ reason: 'manifest changed, resync requested', refresh: true, requiredOnly: false });
    runs[1]?.finish(false);
    expect(await a).toBe(await b);
    expect((await a).ok).toBe(false);
    // Idle again: the next request starts at once.
    void runner.request('SIGHUP');
    await tick();
    expect(runs).toHaveLength(3);
    runs[2]?.finish(true);
  });

  it('turns a thrown sync into a failed outcome, and refuses new work once closed', async () => {
    const runner = new SyncRunner(() => Promise.reject(Object.assign(new Error('boom'))));
    expect(await runner.request('x')).toMatchObject({ ok: false, error: { code: 'E_SYNC_FAILED' } });
    await runner.close();
    expect(await runner.request('y')).toMatchObject({ ok: false, error: { code: 'E_ABORTED' } });
  });
});
