import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { runCli, sandbox, type Sandbox } from './support/cli.js';
import { freePort, killAll, readRecord, startRun, STUB, waitFor, type RunningDaemon } from './support/daemon-harness.js';
import { rawRequest, type RawResponse } from './support/http-get.js';

const TOKEN = 'gate-test-token-0123456789abcdef';
let sb: Sandbox | undefined;

afterEach(async () => {
  await killAll();
  await sb?.cleanup();
  sb = undefined;
});

interface GateRun {
  readonly d: RunningDaemon;
  readonly gate: string;
  readonly comfy: string;
  readonly record: string;
}

/** `modelsync run --gate` in front of the ComfyUI stub, with an empty manifest. */
async function startGated(s: Sandbox, o: { stub?: string[]; run?: string[]; env?: Record<string, string> } = {}): Promise<GateRun> {
  await s.writeManifest([]);
  const [gatePort, comfyPort, control] = [await freePort(), await freePort(), await freePort()];
  const record = path.join(s.dir, `stub-${comfyPort}.json`);
  const args = ['--gate', `127.0.0.1:${gatePort}`, ...(o.run ?? []), '--', process.execPath, STUB, '--port', String(comfyPort), '--stub-record', record, '--stub-models-dir', s.models, ...(o.stub ?? [])];
  const d = startRun(args, s.env({ MODELSYNC_RESTART_BASE_MS: '300', MODELSYNC_PROBE_INTERVAL_MS: '100', ...o.env }), control, [record]);
  return { d, gate: `http://127.0.0.1:${gatePort}`, comfy: `http://127.0.0.1:${comfyPort}`, record };
}

/** /status of the daemon, with the token when one is set. */
async function status(d: RunningDaemon, token?: string): Promise<{ comfyui?: { phase: string }; gate: { notReady: number; relayed: number; openConnections: number } } | undefined> {
  const r = await rawRequest(`${d.controlUrl}/status`, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }).catch(() => undefined);
  return r?.status === 200 ? (JSON.parse(r.body.toString()) as { comfyui?: { phase: string }; gate: { notReady: number; relayed: number; openConnections: number } }) : undefined;
}

const comfyRunning = (d: RunningDaemon, token?: string) => async (): Promise<boolean> => (await status(d, token))?.comfyui?.phase === 'running';

interface Seen {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
}

async function stubRequests(comfy: string): Promise<Seen[]> {
  return JSON.parse((await rawRequest(`${comfy}/stub/requests`)).body.toString()) as Seen[];
}

function vmHwmKiB(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((s) => Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? 0));
}

describe('gate: the front door', () => {
  it('answers 503 with Retry-After from the start while ComfyUI cannot answer, then relays', async () => {
    sb = await sandbox();
    const g = await startGated(sb, { stub: ['--stub-start-delay-ms', '1500'] });
    // Not once a refused connection: the gate listens before the first sync.
    const first = await waitFor('the gate to listen', () => rawRequest(`${g.gate}/system_stats`).catch(() => undefined));
    expect(first.status).toBe(503);
    expect(Number(first.headers['retry-after'])).toBeGreaterThan(0);
    expect(JSON.parse(first.body.toString())).toMatchObject({ error: { type: 'comfyui_not_ready' }, node_errors: {} });
    const page = await rawRequest(`${g.gate}/`, { headers: { accept: 'text/html,*/*' } });
    expect(page.status).toBe(503);
    expect(page.body.toString()).toContain('http-equiv="refresh"');
    const ws = await wsOpen(`${g.gate.replace('http', 'ws')}/ws`).catch((e: Error) => e.message);
    expect(ws).toMatch(/503/);

    await waitFor('ComfyUI to run', comfyRunning(g.d));
    const ok = await rawRequest(`${g.gate}/system_stats`);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body.toString())).toMatchObject({ system: { comfyui_version: '0.3.99-stub' } });
    expect((await status(g.d))?.gate).toMatchObject({ relayed: 1 });
  });

  it('relays headers unchanged but for hop-by-hop ones, and never hands ComfyUI our token or session', async () => {
    sb = await sandbox();
    const g = await startGated(sb, { env: { MODELSYNC_CONTROL_TOKEN: TOKEN } });
    await waitFor('ComfyUI to run', comfyRunning(g.d, TOKEN));
    const r = await rawRequest(`${g.gate}/some/page?x=1`, {
      headers: {
        connection: 'keep-alive, x-hop',
        'x-hop': 'must not pass',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        'proxy-authorization': 'Basic eDp5',
        'x-custom': 'kept',
        origin: 'http://127.0.0.1:1234',
        authorization: `Bearer ${TOKEN}`,
        cookie: `theme=dark; modelsync_gate=abc; lang=en`,
      },
    });
    expect(r.status).toBe(404);
    const seen = (await stubRequests(g.comfy)).find((q) => q.url === '/some/page?x=1');
    expect(seen?.headers).toMatchObject({ 'x-custom': 'kept', origin: 'http://127.0.0.1:1234', cookie: 'theme=dark; lang=en', host: g.gate.slice('http://'.length) });
    for (const h of ['x-hop', 'keep-alive', 'te', 'proxy-authorization', 'authorization']) expect(seen?.headers).not.toHaveProperty(h);
    // Someone else's bearer token is theirs to send.
    await rawRequest(`${g.gate}/other`, { headers: { authorization: 'Bearer somebody-elses-token' } });
    expect((await stubRequests(g.comfy)).find((q) => q.url === '/other')?.headers.authorization).toBe('Bearer somebody-elses-token');
  });

  it('streams a large upload and a large download without holding them in memory', async () => {
    sb = await sandbox();
    const g = await startGated(sb);
    await waitFor('ComfyUI to run', comfyRunning(g.d));
    const pid = g.d.child.pid ?? 0;
    const before = await vmHwmKiB(pid);
    // Large against what garbage not yet collected can hold at a peak (Node 24 let 85 MiB of a
    // 128 MiB stream wait for its collector): only a buffered body grows the peak by a third.
    const size = 512 * 1024 * 1024;
    const up = await upload(`${g.gate}/upload/image`, size);
    expect(up).toMatchObject({ size, sha256: patternSha256(size) });
    const down = await download(`${g.gate}/view?filename=x.png&stub_size=${size}`);
    expect(down).toEqual({ size, sha256: patternSha256(size) });
    // A buffered body would have grown the daemon's peak memory by its size.
    expect((await vmHwmKiB(pid)) - before).toBeLessThan(size / 3 / 1024);
  });

  it('a client that goes away mid-download frees both sides; no listener piles up', async () => {
    sb = await sandbox();
    const g = await startGated(sb);
    await waitFor('ComfyUI to run', comfyRunning(g.d));
    for (let i = 0; i < 20; i++) await abortAfterFirstBytes(`${g.gate}/view?stub_size=${1024 * 1024 * 1024}`);
    const many = await Promise.all(Array.from({ length: 200 }, (_, i) => rawRequest(`${g.gate}/system_stats?i=${i}`)));
    expect(many.every((r) => r.status === 200)).toBe(true);
    await waitFor('connections to close', async () => (await status(g.d))?.gate.openConnections === 0);
    expect(g.d.stderr()).not.toMatch(/MaxListenersExceeded|ERR_STREAM|uncaught/i);
  });

  it('while ComfyUI restarts, requests get 503 and Retry-After, then go through again', async () => {
    sb = await sandbox();
    const g = await startGated(sb, { env: { MODELSYNC_RESTART_BASE_MS: '1500' } });
    await waitFor('ComfyUI to run', comfyRunning(g.d));
    const rec = await waitFor('the stub record', () => readRecord(g.record));
    process.kill(rec.pid, 'SIGKILL');
    const during: RawResponse = await waitFor('a 503 during the restart', async () => {
      const r = await rawRequest(`${g.gate}/system_stats`);
      return r.status === 503 ? r : undefined;
    });
    expect(Number(during.headers['retry-after'])).toBeGreaterThan(0);
    await waitFor('ComfyUI to run again', async () => (await rawRequest(`${g.gate}/system_stats`)).status === 200);
    const after = await waitFor('the new stub record', async () => {
      const r = await readRecord(g.record);
      return r && r.pid !== rec.pid ? r : undefined;
    });
    expect(after.pid).not.toBe(rec.pid);
  });

  it('relays the websocket, its text and binary messages, without touching feature_flags', async () => {
    sb = await sandbox();
    const g = await startGated(sb);
    await waitFor('ComfyUI to run', comfyRunning(g.d));
    const ws = new WebSocket(`${g.gate.replace('http', 'ws')}/ws?clientId=me`);
    // Listening before the handshake ends: the first message can come with the 101.
    const got = collect(ws);
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true } }));
    await waitFor('feature_flags', () => got.text.some((m) => m.type === 'feature_flags'));
    expect(got.text[0]).toMatchObject({ type: 'status', data: { sid: 'me' } });
    expect(got.text.find((m) => m.type === 'feature_flags')?.data).not.toHaveProperty('server_side_model_downloads');
    const r = await rawRequest(`${g.comfy}/prompt`, { method: 'POST', body: JSON.stringify({ client_id: 'me', prompt: {} }) });
    const id = (JSON.parse(r.body.toString()) as { prompt_id: string }).prompt_id;
    await waitFor('execution_success', () => got.text.some((m) => m.type === 'execution_success' && m.data.prompt_id === id));
    expect(got.binary[0]?.readUInt32BE(0)).toBe(1);
    ws.close();
  });
});

describe('gate: settings refused before anything starts (exit 2)', () => {
  it('needs a ComfyUI command, its own port, and the token beyond loopback', async () => {
    sb = await sandbox();
    await sb.writeManifest([]);
    const env = sb.env();
    const noCmd = await runCli(['run', '--gate', '127.0.0.1:18999'], env);
    expect(noCmd.code).toBe(2);
    expect(noCmd.stderr).toMatch(/--gate stands in front of ComfyUI/);
    const samePort = await runCli(['run', '--gate', '127.0.0.1:8188', '--', 'python', 'main.py'], env);
    expect(samePort.code).toBe(2);
    expect(samePort.stderr).toMatch(/ComfyUI's own port/);
    const open = await runCli(['run', '--gate', '0.0.0.0:18999', '--', 'python', 'main.py', '--port', '18998'], env);
    expect(open.code).toBe(2);
    expect(open.stderr).toMatch(/MODELSYNC_CONTROL_TOKEN/);
    const flagAlone = await runCli(['run', '--gate-frontend-downloads', '--', 'python', 'main.py'], env);
    expect(flagAlone.code).toBe(2);
  });
});

function wsOpen(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`handshake answered ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

function collect(ws: WebSocket): { text: { type: string; data: Record<string, unknown> }[]; binary: Buffer[] } {
  const out = { text: [] as { type: string; data: Record<string, unknown> }[], binary: [] as Buffer[] };
  ws.on('message', (d: Buffer, isBinary: boolean) => {
    if (isBinary) out.binary.push(d);
    else out.text.push(JSON.parse(d.toString()) as { type: string; data: Record<string, unknown> });
  });
  return out;
}

const CYCLE = Buffer.from(Array.from({ length: (1 << 20) + 251 }, (_, i) => i % 251));

/** Bytes [at, at + len) of the stub's pattern (byte i is i mod 251), len at most 1 MiB. */
function pattern(at: number, len: number): Buffer {
  return CYCLE.subarray(at % 251, (at % 251) + len);
}

function patternSha256(size: number): string {
  const h = createHash('sha256');
  for (let at = 0; at < size; at += 1 << 20) h.update(pattern(at, Math.min(1 << 20, size - at)));
  return h.digest('hex');
}

function upload(url: string, size: number): Promise<{ size: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': size } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString()) as { size: number; sha256: string }));
    });
    req.on('error', reject);
    let at = 0;
    const write = (): void => {
      while (at < size) {
        const len = Math.min(1 << 20, size - at);
        const piece = pattern(at, len);
        at += len;
        if (!req.write(piece)) return void req.once('drain', write);
      }
      req.end();
    };
    write();
  });
}

function download(url: string): Promise<{ size: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      const h = createHash('sha256');
      let size = 0;
      res.on('data', (c: Buffer) => {
        h.update(c);
        size += c.length;
      });
      res.on('end', () => resolve({ size, sha256: h.digest('hex') }));
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

/** GET, read the first bytes of the body, then drop the connection. */
function abortAfterFirstBytes(url: string): Promise<void> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const s = connect(Number(u.port), u.hostname, () => s.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`));
    let got = 0;
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got > 64 * 1024) s.destroy();
    });
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
}
