/**
 * hostile-world.md, local callers: "a request to the control API with a foreign Host or Origin,
 * or from a web page -> refused; beyond loopback a bearer token is required" (issue 13, class 6).
 * A browser on this machine is the attacker: DNS rebinding gives a page the API's address under
 * the attacker's name, and a form or text/plain POST reaches any port without a preflight.
 */
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startControl, type ControlServer } from '../../src/daemon/control.js';
import { RequestGuard } from '../../src/daemon/request-guard.js';
import { DaemonState } from '../../src/daemon/state.js';
import type { SyncOutcome } from '../../src/daemon/sync-runner.js';
import { silentLogger } from '../../src/log.js';
import type { Entry, Manifest } from '../../src/manifest/types.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { leakedSecrets, runCli, sandbox, type Sandbox } from '../support/cli.js';
import { freePort, killAll, startRun, waitFor } from '../support/daemon-harness.js';
import { rawRequest, type RawResponse } from '../support/http-get.js';
import { sha256 } from '../support/models.js';

const TOKEN = 'ctl-TOKENdoNotLeak-0123456789abcdef';
const OUTCOME: SyncOutcome = { ok: true, reason: 'resync requested', report: { ok: true, entries: [], bytesFetched: 0, durationMs: 1 } };

let server: ControlServer | undefined;
let resyncs = 0;
afterEach(async () => {
  await server?.close();
  server = undefined;
  resyncs = 0;
});

function entry(index: number, dest: string): Entry {
  const url = `https://example.invalid/${index}`;
  return { index, source: { kind: 'https', url, uri: url }, dest, sha256: 'ab'.repeat(32), size: 1000, allowPickle: false, required: true };
}

function manifest(entries: Entry[]): Manifest {
  return { path: '/etc/modelsync/manifest.yaml', entries, unplaced: [], folders: [], s3: { endpoint: undefined, region: undefined, pathStyle: undefined } };
}

async function serve(opts: { host?: string; token?: string } = {}): Promise<{ url: string; port: number; state: DaemonState }> {
  const state = new DaemonState('service');
  state.setManifest(manifest([entry(0, 'checkpoints/secret-project.safetensors')]));
  server = await startControl({ host: opts.host ?? '127.0.0.1', port: 0, token: opts.token }, { state, resync: () => (resyncs++, Promise.resolve(OUTCOME)) }, silentLogger());
  const port = Number(new URL(server.url).port);
  return { url: `http://127.0.0.1:${port}`, port, state };
}

function ask(url: string, p: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<RawResponse> {
  return rawRequest(url + p, { timeoutMs: 5000, ...opts });
}

/** One request written by hand: Node's client always sends exactly one Host. */
function rawHttp(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.end(text));
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

function noCors(r: RawResponse): void {
  expect(r.headers['access-control-allow-origin']).toBeUndefined();
  expect(r.headers['access-control-allow-credentials']).toBeUndefined();
}

const ALL: readonly [string, string][] = [
  ['GET', '/healthz'],
  ['GET', '/readyz'],
  ['GET', '/status'],
  ['GET', '/metrics'],
  ['POST', '/resync'],
];

describe('the control API accepts only its own callers (issue 13, class 6)', () => {
  it('DNS rebinding: a Host that is not this server is refused on every path; /status is never read', async () => {
    const { url, port } = await serve();
    for (const host of ['evil.example', `evil.example:${port}`, `127.0.0.1.evil.example:${port}`, `localhost.evil.example`, '[::2]', '10.255.255.1', `127.0.0.1@evil.example`]) {
      for (const [method, p] of ALL) {
        const r = await ask(url, p, { method, headers: { host } });
        expect([400, 403], `${method} ${p} with Host ${host}`).toContain(r.status);
        expect(r.body.toString()).not.toMatch(/secret-project|entries|modelsync_/);
        noCors(r);
      }
    }
    expect(resyncs).toBe(0);
    // No Host at all (HTTP/1.0), and two of them: which one would a proxy have routed by?
    expect(await rawHttp(port, 'GET /status HTTP/1.0\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    expect(await rawHttp(port, `GET /status HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n`)).toMatch(/^HTTP\/1\.1 400 /);
    // Its own names still work: the address, localhost (any case, a trailing dot), loopback.
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LocalHost.:${port}`, '127.0.0.1', `127.8.9.10:${port}`]) {
      expect((await ask(url, '/status', { headers: { host } })).status, host).toBe(200);
    }
    expect((await ask(url, '/resync', { method: 'POST', headers: { host: `localhost:${port}` } })).status).toBe(200);
    expect(resyncs).toBe(1);
  });

  it('a web page: a foreign Origin, a cross-site fetch and a body that needs no preflight are refused', async () => {
    const { url, port } = await serve();
    const refused: [string, Record<string, string>, string | undefined, number][] = [
      ['POST', { origin: 'http://evil.example' }, undefined, 403],
      // ComfyUI's own frontend (another port on localhost) is another origin too.
      ['POST', { origin: 'http://127.0.0.1:8188' }, undefined, 403],
      ['POST', { origin: `http://localhost:${port + 1}` }, undefined, 403],
      ['POST', { origin: `https://127.0.0.1:${port}` }, undefined, 403],
      ['POST', { origin: 'null' }, undefined, 403],
      ['GET', { 'sec-fetch-site': 'cross-site' }, undefined, 403],
      ['GET', { 'sec-fetch-site': 'same-site' }, undefined, 403],
      // A "simple" request: a browser sends it cross-origin without asking first.
      ['POST', { 'content-type': 'text/plain' }, 'x', 415],
      ['POST', { 'content-type': 'application/x-www-form-urlencoded' }, 'a=b', 415],
      ['POST', { 'content-type': 'multipart/form-data; boundary=x' }, '--x--', 415],
      ['POST', {}, 'no type at all', 415],
      ['POST', { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' }, 'x', 415],
    ];
    for (const [method, headers, body, status] of refused) {
      for (const p of method === 'GET' ? ['/status', '/metrics'] : ['/resync']) {
        const r = await ask(url, p, { method, headers, ...(body === undefined ? {} : { body }) });
        expect(r.status, `${method} ${p} ${JSON.stringify(headers)}`).toBe(status);
        expect(r.body.toString()).not.toMatch(/secret-project|"ok"/);
        noCors(r);
      }
    }
    const preflight = await ask(url, '/resync', { method: 'OPTIONS', headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' } });
    expect(preflight.status).toBeGreaterThanOrEqual(400);
    noCors(preflight);
    expect(resyncs).toBe(0);

    // Its own callers: no body, a JSON body, its own origin, a request typed into the address bar.
    expect((await ask(url, '/resync', { method: 'POST' })).status).toBe(200);
    expect((await ask(url, '/resync', { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-8' }, body: '{}' })).status).toBe(200);
    expect((await ask(url, '/resync', { method: 'POST', headers: { origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'same-origin' } })).status).toBe(200);
    expect((await ask(url, '/status', { headers: { 'sec-fetch-site': 'none' } })).status).toBe(200);
    expect(resyncs).toBe(3);
  });

  it('with MODELSYNC_CONTROL_TOKEN every request but the probes needs it, and a missing token looks like a wrong one', async () => {
    const { url } = await serve({ token: TOKEN });
    const without = await ask(url, '/status');
    expect(without.status).toBe(401);
    expect(without.headers['www-authenticate']).toBe('Bearer realm="modelsync"');
    for (const authorization of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}`, TOKEN, 'Bearer', `Bearer  ${TOKEN} extra`]) {
      for (const [method, p] of ALL.filter(([m, q]) => m === 'POST' || q === '/status' || q === '/metrics')) {
        const r = await ask(url, p, { method, headers: { authorization } });
        expect(r.status, `${method} ${p} with ${authorization}`).toBe(401);
        // The same answer, byte for byte, whatever was wrong with the token.
        expect(r.body.toString()).toBe(without.body.toString());
        expect(r.body.toString()).not.toContain(TOKEN.slice(0, 8));
      }
    }
    expect(resyncs).toBe(0);
    const good = { authorization: `Bearer ${TOKEN}` };
    expect((await ask(url, '/status', { headers: good })).status).toBe(200);
    expect((await ask(url, '/metrics', { headers: { authorization: `bearer ${TOKEN}` } })).status).toBe(200);
    expect((await ask(url, '/resync', { method: 'POST', headers: good })).status).toBe(200);
    expect(resyncs).toBe(1);
    // Probes cannot carry a secret; they learn whether, not which models are missing.
    const probe = await ask(url, '/readyz');
    expect(probe.status).toBe(503);
    expect(probe.body.toString()).toMatch(/waiting for 1 required model\n$/);
    expect(probe.body.toString()).not.toContain('secret-project');
    expect((await ask(url, '/readyz', { headers: good })).body.toString()).toContain('secret-project');
    expect((await ask(url, '/healthz')).status).toBe(200);
    // The token does not open the door to a foreign Host or Origin.
    expect((await ask(url, '/status', { headers: { ...good, host: 'evil.example' } })).status).toBe(403);
    expect((await ask(url, '/resync', { method: 'POST', headers: { ...good, origin: 'http://evil.example' } })).status).toBe(403);
    expect((await ask(url, '/resync', { method: 'POST', headers: { ...good, 'content-type': 'text/plain' }, body: 'x' })).status).toBe(415);
    expect(resyncs).toBe(1);
  });

  it('beyond loopback a token is required before anything listens; with one, the machine\'s own addresses are its names', async () => {
    await expect(serve({ host: '0.0.0.0' })).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringMatching(/MODELSYNC_CONTROL_TOKEN/) as unknown });
    expect(server).toBeUndefined();
    const { url, port } = await serve({ host: '0.0.0.0', token: TOKEN });
    const good = { authorization: `Bearer ${TOKEN}` };
    expect((await ask(url, '/status', { headers: good })).status).toBe(200);
    expect((await ask(url, '/status', { headers: { ...good, host: `evil.example:${port}` } })).status).toBe(403);
    // A kubelet probe is sent to the pod's own address.
    const own = Object.values(networkInterfaces()).flatMap((l) => l ?? []).find((a) => a.family === 'IPv4' && !a.internal);
    if (own) {
      expect((await ask(`http://${own.address}:${port}`, '/healthz')).status).toBe(200);
      expect((await ask(`http://${own.address}:${port}`, '/status')).status).toBe(401);
      expect((await ask(`http://${own.address}:${port}`, '/status', { headers: good })).status).toBe(200);
    }
  });

  it('a token too short to resist guessing, or one that cannot be a header value, is bad usage and is never echoed', () => {
    for (const bad of ['short-token', 'has a space in it 0123456789', 'tab\tin-it-0123456789abcdef', 'ünïcode-0123456789abcdef']) {
      let err: unknown;
      try {
        loadConfig({ 'models-dir': tmpdir() }, { MODELSYNC_CONTROL_TOKEN: bad });
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'E_USAGE' });
      expect((err as Error).message).not.toContain(bad);
    }
    const c = loadConfig({ 'models-dir': tmpdir() }, { MODELSYNC_CONTROL_TOKEN: ` ${TOKEN}\n` });
    expect(c.control.token).toBe(TOKEN);
    expect(c.secrets).toContain(TOKEN);
    expect(Object.keys(c.childEnv)).not.toContain('MODELSYNC_CONTROL_TOKEN');
  });

  it('property: whatever the Host header says, it passes only when it names this server', () => {
    const guard = new RequestGuard({ host: '127.0.0.1', token: undefined });
    const allowed = (h: string): boolean => {
      const name = h.replace(/:\d{1,5}$/, '').toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
      return name === 'localhost' || name === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
    };
    const hostish = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.domain(),
      fc.ipV4(),
      fc.ipV6().map((a) => `[${a}]`),
      fc.tuple(fc.constantFrom('localhost', '127.0.0.1', '[::1]', 'LOCALHOST.', 'localhost.evil', 'evil.localhost'), fc.constantFrom('', ':1', ':8189', ':x', '::', '@a')).map(([a, b]) => a + b),
    );
    fc.assert(
      fc.property(hostish, (host) => {
        const req = { method: 'GET', headers: { host }, rawHeaders: ['Host', host] } as unknown as Parameters<RequestGuard['check']>[0];
        const v = guard.check(req, '/status');
        if (v.ok) expect(allowed(host), host).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('the CLI side: run, resync and status with the token (issue 13, class 6)', () => {
  let web: ByteServer;
  let sb: Sandbox | undefined;
  const body = Buffer.from('a small model file\n'.repeat(100));
  beforeAll(async () => {
    web = await startByteServer({ files: { '/m.gguf': body } });
  });
  afterAll(async () => {
    await web.close();
  });
  afterEach(async () => {
    await killAll();
    await sb?.cleanup();
    sb = undefined;
  });

  it('run --control 0.0.0.0:PORT without a token exits 2 in one line before anything is fetched or served', async () => {
    sb = await sandbox();
    await sb.writeManifest([{ source: `${web.url}/m.gguf`, dest: 'checkpoints/m.gguf', sha256: sha256(body) }]);
    const port = await freePort();
    const r = await runCli(['run', '--control', `0.0.0.0:${port}`], sb.env(), { timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^modelsync: --control 0\.0\.0\.0:\d+ listens beyond loopback: set MODELSYNC_CONTROL_TOKEN/m);
    expect(r.stderr).not.toContain('internal error');
    expect(web.requests).toEqual([]);
  });

  it('resync and status send the token; without it or with a wrong one they fail in one line and never sync in-process', async () => {
    sb = await sandbox();
    await sb.writeManifest([{ source: `${web.url}/m.gguf`, dest: 'checkpoints/m.gguf', sha256: sha256(body) }]);
    const port = await freePort();
    const env = sb.env({ MODELSYNC_CONTROL_TOKEN: TOKEN, MODELSYNC_LOG_LEVEL: 'debug' });
    const d = startRun([], env, port);
    await waitFor('the first sync', async () => (await d.get('/readyz'))?.status === 200);
    const requestsBefore = web.requests.length;
    const client = (token: string | undefined): Record<string, string> => {
      const e = sb?.env({ MODELSYNC_CONTROL: `127.0.0.1:${port}` }) ?? {};
      return token === undefined ? e : { ...e, MODELSYNC_CONTROL_TOKEN: token };
    };
    const none = await runCli(['resync'], client(undefined));
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^modelsync: the daemon at \S+ requires a token: set MODELSYNC_CONTROL_TOKEN/m);
    expect(none.stderr).not.toMatch(/syncing in-process|internal error/);
    const wrong = await runCli(['resync'], client(`${TOKEN}-but-not-this-one`));
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/refused MODELSYNC_CONTROL_TOKEN/);
    const st = await runCli(['status'], client(undefined));
    expect(st.code).toBe(1);
    expect(st.stderr).toMatch(/requires a token/);
    expect(web.requests.length).toBe(requestsBefore);

    const ok = await runCli(['resync'], client(TOKEN));
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/resync by the daemon at/);
    const okStatus = await runCli(['status'], client(TOKEN));
    expect(okStatus.code).toBe(0);
    expect(okStatus.stdout).toMatch(/^daemon at /m);
    d.signal('SIGTERM');
    await d.exited;
    const texts = [none.stdout, none.stderr, wrong.stdout, wrong.stderr, st.stderr, ok.stdout, ok.stderr, okStatus.stdout, d.stdout(), d.stderr()];
    expect(texts.filter((t) => t.includes(TOKEN))).toEqual([]);
    expect(leakedSecrets(...texts)).toEqual([]);
  });
});
