import { request } from 'node:http';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, killAll, startRun, waitFor } from './support/daemon-harness.js';
import { rawRequest } from './support/http-get.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256, sha256 } from './support/models.js';
import { s3Env, startS3 } from './support/s3-fixture.js';
import { makeSafetensors } from './support/safetensors.js';

const { hub, sandbox } = await useHubSandbox();

afterEach(async () => {
  await killAll();
});

function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const text = JSON.stringify(body);
  return rawRequest(url, { method: 'POST', body: text, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) }, timeoutMs: 60_000 }).then((r) => ({
    status: r.status,
    json: JSON.parse(r.body.toString()) as Record<string, unknown>,
  }));
}

describe('models on demand in `modelsync run`', () => {
  it('a request is served beside a long manifest sync, not behind it; /events ends when the daemon stops', async () => {
    const sb = await sandbox(hub.endpoint);
    const slow = addModel(hub, 3_000_000);
    const wanted = addModel(hub, 50_000);
    hub.setFaults(slow.sha256, { bytesPerSecond: 200_000 });
    await sb.writeManifest([{ source: slow.uri, dest: 'checkpoints/slow.safetensors', required: false }], { on_demand: { allow: [`hf://${wanted.repo}/*`, `hf://${wanted.repo}@*`], max_bytes: '1G' } });
    const d = startRun([], sb.env(), await freePort());
    await waitFor('the slow manifest download to be under way', async () => (await d.status().catch(() => undefined))?.entries.find((e) => e.dest === 'checkpoints/slow.safetensors')?.state === 'downloading');
    // Events from here on; the stream must end (not reset) when the daemon stops.
    let events = '';
    const stream = new Promise<boolean>((resolve, reject) => {
      const req = request(`${d.controlUrl}/events`, { agent: false }, (res) => {
        res.setEncoding('utf8');
        res.on('data', (t: string) => (events += t));
        res.on('end', () => resolve(true));
        res.on('error', () => resolve(false));
      });
      req.on('error', reject);
      req.end();
    });
    await waitFor('the event stream to open', () => events.startsWith(': modelsync on-demand events'));
    const answer = await post(`${d.controlUrl}/models?wait=60`, { models: [{ name: 'wanted.safetensors', url: `${hub.endpoint}/${wanted.repo}/resolve/main/${wanted.path}`, directory: 'loras' }] });
    expect(answer.status).toBe(200);
    expect(answer.json).toMatchObject({ ok: true, models: [{ dest: 'loras/wanted.safetensors', source: `hf://${wanted.repo}@main/${wanted.path}`, state: 'ready' }] });
    // The manifest's download is still going: the request did not wait for it.
    const status = await d.status();
    expect(status.entries.find((e) => e.dest === 'checkpoints/slow.safetensors')?.state).toBe('downloading');
    expect((status as unknown as { onDemand: { entries: number; bytesUsed: number } }).onDemand).toMatchObject({ entries: 1, bytesUsed: wanted.content.length });
    expect(await fileSha256(path.join(sb.models, 'loras/wanted.safetensors'))).toBe(wanted.sha256);
    await waitFor('the ready event', () => events.includes('event: ready'));
    const metrics = (await rawRequest(`${d.controlUrl}/metrics`)).body.toString();
    expect(metrics).toContain(`modelsync_on_demand_bytes ${wanted.content.length}`);
    d.signal('SIGTERM');
    expect(await stream).toBe(true);
    expect((await d.exited).code).toBe(0);
  });

  it('an S3 request without a sha256 is trusted on first use: one whole GET, its sha256 the key, not fetched again', async () => {
    const sb = await sandbox(hub.endpoint);
    const s3 = await startS3(['team-models']);
    try {
      const body = makeSafetensors(120_000, 99);
      await s3.put('team-models', 'loras/s3-style.safetensors', body);
      await sb.writeManifest([], { on_demand: { allow: ['s3://team-models/loras/*'], max_bytes: '10M' } });
      const env = sb.env(s3Env(s3, sb.dir));
      const d = startRun([], env, await freePort());
      await waitFor('the control API', async () => (await d.get('/readyz'))?.status === 200);
      const want = { source: 's3://team-models/loras/s3-style.safetensors', dest: 'loras/s3-style.safetensors' };
      const first = await post(`${d.controlUrl}/models?wait=60`, { models: [want] });
      expect(first.status).toBe(200);
      expect(await fileSha256(path.join(sb.models, want.dest))).toBe(sha256(body));
      expect(s3.gets('loras/s3-style.safetensors').map((g) => g.range)).toEqual([undefined]);
      const again = await post(`${d.controlUrl}/models?wait=60`, { models: [{ ...want, dest: 'loras/s3-again.safetensors' }] });
      expect(again.status).toBe(200);
      expect(s3.gets('loras/s3-style.safetensors')).toHaveLength(1);
    } finally {
      await s3.close();
    }
  });
});
