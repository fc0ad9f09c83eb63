import { request, type IncomingMessage } from 'node:http';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { startControl, type ControlServer } from '../../src/daemon/control.js';
import { DaemonState } from '../../src/daemon/state.js';
import type { ModelEvent, OnDemandService } from '../../src/ondemand/service.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { rawRequest } from '../support/http-get.js';
import { addModel, exists, fileSha256 } from '../support/models.js';
import { onDemandRig, type Rig } from '../support/on-demand-rig.js';

const { hub } = await useHubSandbox();
let rig: Rig | undefined;
let server: ControlServer | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
  await rig?.close();
  rig = undefined;
});

const TOKEN = 'on-demand-test-token-0123456789';

async function serve(maxBytes = '10M', opts: { token?: string; heartbeatMs?: number; maxBufferedBytes?: number } = {}): Promise<string> {
  rig = await onDemandRig(hub.endpoint, `version: 1\nmodels: []\non_demand:\n  allow: ["hf://*"]\n  max_bytes: ${maxBytes}\n`);
  const state = new DaemonState('service');
  state.setManifest(rig.manifest);
  state.onDemand = () => ({ ...(rig as Rig).service.status(), requests: (rig as Rig).service.requestCounts });
  const events = opts.heartbeatMs === undefined ? undefined : { heartbeatMs: opts.heartbeatMs, maxBufferedBytes: opts.maxBufferedBytes ?? 1024 * 1024 };
  server = await startControl({ host: '127.0.0.1', port: 0, token: opts.token }, { state, resync: () => Promise.reject(new Error('unused')), onDemand: rig.service, events }, silentLogger());
  return server.url;
}

interface Answer {
  status: number;
  json: Record<string, unknown> & { error?: { code: string; message: string; dest?: string }; job?: string; models?: { dest: string; state: string; error?: { code: string } }[] };
}

async function waitUntil(fn: () => boolean): Promise<void> {
  while (!fn()) await new Promise((r) => setTimeout(r, 10));
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const r = await rawRequest(url, { method: 'POST', body: text, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers }, timeoutMs: 30_000 });
  const raw = r.body.toString();
  return { status: r.status, json: (raw.startsWith('{') ? JSON.parse(raw) : { raw }) as Answer['json'] };
}

describe('POST /models', () => {
  it('202 with the job at once; GET /models/jobs/ID follows it; ?wait= answers with the outcome; ?wait=0 is readiness', async () => {
    const m = addModel(hub, 300_000);
    const url = await serve();
    const body = { models: [{ source: m.uri, dest: 'loras/a.safetensors' }] };
    const first = await post(`${url}/models?wait=0`, body);
    expect(first.status).toBe(202);
    const id = first.json.job as string;
    expect(first.json.models?.[0]).toMatchObject({ dest: 'loras/a.safetensors' });
    const done = await post(`${url}/models?wait=60`, body);
    expect(done.status).toBe(200);
    expect(done.json).toMatchObject({ done: true, ok: true, models: [{ dest: 'loras/a.safetensors', state: 'ready' }] });
    expect(await fileSha256(path.join((rig as Rig).sb.models, 'loras/a.safetensors'))).toBe(m.sha256);
    const job = await rawRequest(`${url}/models/jobs/${id}`);
    expect(job.status).toBe(200);
    expect(JSON.parse(job.body.toString())).toMatchObject({ id, models: [{ dest: 'loras/a.safetensors', total: m.content.length }] });
    // Now in place: ?wait=0 says so at once, 200.
    const now = await post(`${url}/models?wait=0`, body);
    expect(now.status).toBe(200);
    expect(now.json).toMatchObject({ ok: true });
    // Without ?wait, always 202.
    expect((await post(`${url}/models`, body)).status).toBe(202);
    expect((await rawRequest(`${url}/models/jobs/nosuchjob`)).status).toBe(404);
    expect((await rawRequest(`${url}/models/jobs/${'x'.repeat(500)}`)).status).toBe(404);
  });

  it('GET /models/jobs/ID while downloading: bytes done so far, the total, a speed; once ready, bytes is the total and speed 0', async () => {
    const m = addModel(hub, 600_000);
    hub.setFaults(m.sha256, { bytesPerSecond: 300_000 });
    try {
      const url = await serve();
      const id = (await post(`${url}/models`, { models: [{ source: m.uri, dest: 'loras/slow.safetensors' }] })).json.job as string;
      type Entry = { state: string; bytes: number; total: number; speed: number };
      const job = async (): Promise<{ done: boolean; models: Entry[] }> => JSON.parse((await rawRequest(`${url}/models/jobs/${id}`)).body.toString()) as { done: boolean; models: Entry[] };
      let mid: Entry | undefined;
      while (mid === undefined) {
        const e = (await job()).models[0];
        if (e?.state === 'downloading' && e.bytes > 0 && e.speed > 0) mid = e;
        else if (e?.state === 'ready') throw new Error('ready before it was seen downloading');
        else await new Promise((r) => setTimeout(r, 20));
      }
      expect(mid.total).toBe(m.content.length);
      expect(mid.bytes).toBeLessThan(m.content.length);
      let last = await job();
      while (!last.done) {
        await new Promise((r) => setTimeout(r, 50));
        last = await job();
      }
      expect(last.models[0]).toMatchObject({ state: 'ready', bytes: m.content.length, total: m.content.length, speed: 0 });
    } finally {
      hub.clearFaults();
    }
  });

  it('?wait= answers the first failure with its status and {"error": {code, message, dest}}', async () => {
    const m = addModel(hub, 20_000);
    const url = await serve('100K');
    const missing = await post(`${url}/models?wait=60`, { models: [{ source: `hf://${m.repo}/no-such-file.safetensors`, dest: 'loras/x.safetensors' }] });
    expect(missing.status).toBe(502);
    expect(missing.json.error).toMatchObject({ code: 'E_NOT_FOUND', dest: 'loras/x.safetensors' });
    const big = addModel(hub, 200_000);
    const tooBig = await post(`${url}/models?wait=60`, { models: [{ source: big.uri, dest: 'loras/big.safetensors' }] });
    expect(tooBig.status).toBe(403);
    expect(tooBig.json.error?.code).toBe('E_POLICY');
    const refused = await post(`${url}/models?wait=60`, { models: [{ source: 'https://example.org/x.safetensors', dest: 'loras/y.safetensors', sha256: 'a'.repeat(64) }] });
    expect(refused.status).toBe(403);
    expect(refused.json.error).toMatchObject({ code: 'E_POLICY', dest: 'loras/y.safetensors' });
    expect(refused.json.error?.message).toContain('on_demand.allow');
  });

  it('hostile requests: huge bodies, deep JSON, thousands of entries, unknown fields, bad types, duplicate dests, a dest into the store', async () => {
    const m = addModel(hub, 10_000);
    const url = await serve();
    const ok = { source: m.uri, dest: 'loras/a.safetensors' };
    const cases: [string, unknown, number, string][] = [
      ['not JSON', '{"models": [', 400, 'E_USAGE'],
      ['empty object', {}, 400, 'E_USAGE'],
      ['a list, not an object', [ok], 400, 'E_USAGE'],
      ['models not a list', { models: ok }, 400, 'E_USAGE'],
      ['unknown top-level field', { models: [ok], wait: 5 }, 400, 'E_USAGE'],
      ['no models', { models: [] }, 400, 'E_USAGE'],
      ['thousands of entries', { models: Array.from({ length: 3000 }, (_, i) => ({ ...ok, dest: `loras/${i}.safetensors` })) }, 400, 'E_USAGE'],
      ['deep JSON', `{"models": [${'['.repeat(5000)}${']'.repeat(5000)}]}`, 400, 'E_USAGE'],
      ['unknown entry field', { models: [{ ...ok, command: 'rm -rf /' }] }, 400, 'E_MANIFEST'],
      ['bad types', { models: [{ source: 7, dest: ['x'] }] }, 400, 'E_MANIFEST'],
      ['null entry', { models: [null] }, 400, 'E_MANIFEST'],
      ['same dest, different content', { models: [ok, { source: `hf://${m.repo}@other/model.safetensors`, dest: ok.dest }] }, 400, 'E_MANIFEST'],
      ['a dest into the store', { models: [{ ...ok, dest: '.modelsync-store/blobs/sha256/aa/x' }] }, 400, 'E_MANIFEST'],
      ['a dest through ..', { models: [{ ...ok, dest: 'loras/../../state/state.db' }] }, 400, 'E_MANIFEST'],
      ['an absolute dest', { models: [{ ...ok, dest: '/etc/cron.d/x' }] }, 400, 'E_MANIFEST'],
      ['a pickle without allow_pickle', { models: [{ source: `hf://${m.repo}/evil.ckpt`, dest: 'checkpoints/evil.ckpt' }] }, 400, 'E_MANIFEST'],
    ];
    for (const [what, body, status, code] of cases) {
      const a = await post(`${url}/models?wait=5`, body);
      expect(a.status, what).toBe(status);
      expect(a.json.error?.code, what).toBe(code);
    }
    // Nothing of any of them started.
    expect((rig as Rig).service.status()).toMatchObject({ entries: 0, jobsRunning: 0 });
    expect(await exists(path.join((rig as Rig).sb.models, 'loras'))).toBe(false);
    // Query strings: only ?wait=, once, a number in range.
    for (const q of ['wait=abc', 'wait=-1', 'wait=1e9', 'wait=', 'wait=1&wait=2', 'other=1']) {
      const a = await post(`${url}/models?${q}`, { models: [ok] });
      expect(a.status, q).toBe(400);
    }
  });

  it('a body over 1 MiB is refused unread, declared or streamed', async () => {
    const url = await serve();
    const huge = JSON.stringify({ models: [{ source: 'hf://a/b/c.safetensors', dest: `loras/${'x'.repeat(2 * 1024 * 1024)}` }] });
    expect((await post(`${url}/models`, huge)).status).toBe(413);
    // No Content-Length: chunked, refused once past the bound, the rest never read.
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${url}/models`, { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      // More than the bound, and never an end: only the server's answer ends this.
      req.write(`{"models": [${' '.repeat(1536 * 1024)}`);
    });
    expect(status).toBe(413);
  });

  it('stays behind the request guard: JSON only, its own Origin, the token', async () => {
    const m = addModel(hub, 10_000);
    const url = await serve('10M', { token: TOKEN });
    const body = { models: [{ source: m.uri, dest: 'loras/a.safetensors' }] };
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect((await post(`${url}/models`, body)).status).toBe(401);
    expect((await post(`${url}/models`, body, { ...auth, 'content-type': 'text/plain' })).status).toBe(415);
    expect((await post(`${url}/models`, body, { ...auth, origin: 'http://evil.test' })).status).toBe(403);
    expect((await post(`${url}/models`, body, { ...auth, host: 'evil.test' })).status).toBe(403);
    expect((await rawRequest(`${url}/events`)).status).toBe(401);
    expect((await rawRequest(`${url}/models/jobs/x`)).status).toBe(401);
    expect((await post(`${url}/models`, body, auth)).status).toBe(202);
    expect((await rawRequest(`${url}/models`, { headers: auth })).status).toBe(405);
  });
});

describe('GET /events', () => {
  /** Read an event stream until `until` says stop (or the server ends it). */
  function readEvents(url: string, until: (text: string) => boolean): Promise<{ text: string; ended: boolean }> {
    return new Promise((resolve, reject) => {
      const req = request(url, { agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
          if (until(text)) {
            req.destroy();
            resolve({ text, ended: false });
          }
        });
        res.on('end', () => resolve({ text, ended: true }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('streams every state change of a job (queued, downloading, verifying, ready) with progress, and heartbeats', async () => {
    const m = addModel(hub, 200_000);
    const url = await serve('10M', { heartbeatMs: 50 });
    const stream = readEvents(`${url}/events`, (t) => t.includes('event: ready') && t.includes(': heartbeat'));
    await new Promise((r) => setTimeout(r, 20));
    expect((await post(`${url}/models`, { models: [{ source: m.uri, dest: 'loras/a.safetensors' }] })).status).toBe(202);
    const { text } = await stream;
    expect(text.startsWith(': modelsync on-demand events\nretry: 3000\n\n')).toBe(true);
    const events = text
      .split('\n\n')
      .filter((b) => b.includes('event: '))
      .map((b) => ({ type: /event: (\S+)/.exec(b)?.[1], data: JSON.parse(/data: (.*)/.exec(b)?.[1] ?? '{}') as { dest: string; state: string; job: string } }));
    const types = events.map((e) => e.type);
    expect(types[0]).toBe('queued');
    expect(types).toEqual(expect.arrayContaining(['downloading', 'verifying', 'ready']));
    expect(types.indexOf('ready')).toBeGreaterThan(types.indexOf('downloading'));
    expect(events.every((e) => e.data.dest === 'loras/a.safetensors' && typeof e.data.job === 'string')).toBe(true);
  });

  it('streams an eviction as event: evicted, which belongs to no job', async () => {
    const [a, b] = [addModel(hub, 100_000), addModel(hub, 100_000)];
    const url = await serve('150000');
    expect((await post(`${url}/models?wait=60`, { models: [{ source: a.uri, dest: 'loras/a.safetensors' }] })).status).toBe(200);
    const stream = readEvents(`${url}/events`, (t) => t.includes('event: evicted') && t.includes('event: ready'));
    await new Promise((r) => setTimeout(r, 20));
    expect((await post(`${url}/models?wait=60`, { models: [{ source: b.uri, dest: 'loras/b.safetensors' }] })).status).toBe(200);
    const { text } = await stream;
    const evicted = text.split('\n\n').find((e) => e.includes('event: evicted')) ?? '';
    const data = JSON.parse(/data: (.*)/.exec(evicted)?.[1] ?? '{}') as Record<string, unknown>;
    expect(data).toMatchObject({ dest: 'loras/a.safetensors', state: 'evicted' });
    expect(data.job).toBeUndefined();
    expect(await exists(path.join(rig?.sb.models ?? '', 'loras/a.safetensors'))).toBe(false);
  });

  it('?job=ID keeps one job\'s events', async () => {
    const [a, b] = [addModel(hub, 20_000), addModel(hub, 20_000)];
    const url = await serve();
    const first = await post(`${url}/models?wait=60`, { models: [{ source: a.uri, dest: 'loras/a.safetensors' }] });
    const id = first.json.id as string;
    // A's job is done: its stream stays silent while B's job runs.
    const stream = readEvents(`${url}/events?job=${id}`, () => false);
    expect((await post(`${url}/models?wait=60`, { models: [{ source: b.uri, dest: 'loras/b.safetensors' }] })).status).toBe(200);
    await server?.close();
    server = undefined;
    const { text, ended } = await stream;
    expect(ended).toBe(true);
    expect(text).not.toContain('event: ');
  });

  it('a client that does not read is cut off once its buffer passes the bound; the others go on', async () => {
    // A service that emits as fast as the test says: far more than a socket's buffers hold.
    const listeners = new Set<(e: ModelEvent) => void>();
    const service: OnDemandService = {
      submit: () => Promise.reject(new Error('unused')),
      job: () => undefined,
      holder: () => ({ id: 'h', release: () => undefined }),
      status: () => ({ enabled: true, maxBytes: 1, bytesUsed: 0, entries: 0, pinned: 0, evictions: 0, jobsRunning: 0 }),
      subscribe: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    const state = new DaemonState('service');
    server = await startControl({ host: '127.0.0.1', port: 0 }, { state, resync: () => Promise.reject(new Error('unused')), onDemand: service, events: { heartbeatMs: 60_000, maxBufferedBytes: 256 * 1024 } }, silentLogger());
    const url = server.url;
    const stuck = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(`${url}/events`, { agent: false }, (res) => {
        res.pause();
        resolve(res);
      });
      req.on('error', reject);
      req.end();
    });
    let got = 0;
    const live = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(`${url}/events`, { agent: false }, resolve);
      req.on('error', reject);
      req.end();
    });
    live.on('data', (d: Buffer) => (got += d.length));
    await waitUntil(() => listeners.size === 2);
    const model = { dest: `loras/${'x'.repeat(900)}.safetensors`, source: 'hf://a/b@main/c', state: 'downloading' as const, bytes: 0, total: 1, speed: 0 };
    // State changes (never skipped, unlike progress) in small bursts with a turn of the event
    // loop between them, as a busy daemon's are: the reader keeps up, the other one never reads.
    let sent = 0;
    while (listeners.size === 2 && sent < 200_000) {
      for (let i = 0; i < 20; i++) for (const l of [...listeners]) l({ type: 'downloading', job: 'j', model });
      sent += 20;
      await new Promise((r) => setTimeout(r, 1));
    }
    // The server let the stuck one go (its listener is gone); the reader is still served.
    expect(listeners.size).toBe(1);
    await waitUntil(() => got > 100_000);
    live.destroy();
    stuck.destroy();
  });

  it('ends every stream when the server closes (shutdown)', async () => {
    const url = await serve();
    const stream = readEvents(`${url}/events`, () => false);
    await new Promise((r) => setTimeout(r, 20));
    await server?.close();
    server = undefined;
    expect((await stream).ended).toBe(true);
  });
});

describe('/status and /metrics', () => {
  it('show the layer: bytes used of max_bytes, entries, evictions', async () => {
    const [a, b] = [addModel(hub, 100_000), addModel(hub, 100_000)];
    const url = await serve('150K');
    expect((await post(`${url}/models?wait=60`, { models: [{ source: a.uri, dest: 'loras/a.safetensors' }] })).status).toBe(200);
    expect((await post(`${url}/models?wait=60`, { models: [{ source: b.uri, dest: 'loras/b.safetensors' }] })).status).toBe(200);
    const status = JSON.parse((await rawRequest(`${url}/status`)).body.toString()) as { onDemand: Record<string, unknown> };
    expect(status.onDemand).toMatchObject({ enabled: true, maxBytes: 150 * 1024, bytesUsed: b.content.length, entries: 1, evictions: 1, pinned: 0, jobsRunning: 0, requests: { ok: 2, refused: 0 } });
    const metrics = (await rawRequest(`${url}/metrics`)).body.toString();
    expect(metrics).toContain(`modelsync_on_demand_bytes ${b.content.length}\n`);
    expect(metrics).toContain(`modelsync_on_demand_max_bytes ${150 * 1024}\n`);
    expect(metrics).toContain('modelsync_on_demand_evictions_total 1\n');
    expect(metrics).toContain('modelsync_on_demand_requests_total{outcome="accepted"} 2\n');
  });
});
