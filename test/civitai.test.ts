/**
 * Civitai as a first-class source (issue 16, part 1), against the stand-in in support/civitai.ts:
 * every form of source, dests derived from the model type and the file's name, the sha256 from
 * the API and the size from the download, the token to Civitai only, a warm start that asks
 * nothing, and a lock that pins version, file, sha256 and the derived dest.
 */
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from './support/cli.js';
import { freePort, killAll, startRun, waitFor } from './support/daemon-harness.js';
import { startCivitai, type CivitaiStandIn } from './support/civitai.js';
import { makeSafetensors } from './support/hub.js';
import { exists, fileSha256, sha256 } from './support/models.js';
import { secretsInFiles } from './support/scan-secrets.js';

const TOKEN = 'CIVITAItokenDoNotLeak0123456789';
const MiB = 1024 * 1024;
let civitai: CivitaiStandIn;
let sb: Sandbox;
let nextId = 100_000;

beforeAll(async () => {
  civitai = await startCivitai();
  civitai.tokens.add(TOKEN);
});
afterAll(async () => {
  await civitai.close();
});
afterEach(async () => {
  await killAll();
  civitai.contentDisposition = undefined;
  civitai.rateLimit = undefined;
  await sb?.cleanup();
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({ CIVITAI_ENDPOINT: civitai.endpoint, CIVITAI_TOKEN: TOKEN, ...extra });
}

/** A fresh version holding `files` (the first one primary); returns its id. */
function version(modelType: string, files: { name: string; bytes?: number; content?: Buffer; type?: string; format?: string }[]): { id: number; contents: Buffer[] } {
  const id = ++nextId;
  const contents = files.map((f, i) => f.content ?? makeSafetensors(f.bytes ?? 50_000, id * 10 + i));
  civitai.add({ id, modelId: id + 7, modelType, files: files.map((f, i) => ({ name: f.name, content: contents[i] as Buffer, ...(f.type ? { type: f.type } : {}), ...(f.format ? { format: f.format } : {}) })) });
  return { id, contents };
}

const siteRequests = (): number => civitai.requests.filter((r) => r.host === 'site').length;

function json(r: CliResult): { ok: boolean; entries: Array<{ index: number; dest: string; state: string; error?: { code: string; message: string } }> } {
  return JSON.parse(r.stdout) as ReturnType<typeof json>;
}

async function noSecrets(r: CliResult): Promise<void> {
  expect(r.stdout + r.stderr).not.toContain(TOKEN);
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(await secretsInFiles([sb.state, sb.models], [TOKEN])).toEqual([]);
}

describe('civitai sources', () => {
  it('every source form, no dest and no sha256 needed: dests from the model type and file name, the token to Civitai only', async () => {
    sb = await sandbox();
    const lora = version('LORA', [{ name: 'pixel-art.safetensors' }]);
    const ckpt = version('Checkpoint', [{ name: 'dream.safetensors' }]);
    const emb = version('TextualInversion', [{ name: 'easyneg.safetensors' }]);
    const vae = version('VAE', [{ name: 'sdxl-vae.safetensors' }]);
    const cn = version('Controlnet', [{ name: 'canny.safetensors' }]);
    // The storage host names every file "../../evil.safetensors": never used as a name.
    civitai.contentDisposition = 'attachment; filename="../../evil.safetensors"';
    await sb.writeManifest([
      { source: `civitai://${lora.id}` },
      { source: `urn:air:sdxl:checkpoint:civitai:${ckpt.id + 7}@${ckpt.id}` },
      { source: `https://civitai.com/api/download/models/${emb.id}?type=Model&format=SafeTensor` },
      { source: `https://civitai.com/models/${vae.id + 7}/some-vae?modelVersionId=${vae.id}` },
      { source: `civitai://${cn.id}`, dest: 'controlnet/sdxl/my-canny.safetensors' },
    ]);
    civitai.requests.length = 0;
    const r = await runCli(['sync', '--json'], env());
    expect(r.stderr).not.toContain('internal error');
    expect(json(r).entries.map((e) => [e.dest, e.state])).toEqual([
      ['loras/pixel-art.safetensors', 'published'],
      ['checkpoints/dream.safetensors', 'published'],
      ['embeddings/easyneg.safetensors', 'published'],
      ['vae/sdxl-vae.safetensors', 'published'],
      ['controlnet/sdxl/my-canny.safetensors', 'published'],
    ]);
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'loras/pixel-art.safetensors'))).toBe(sha256(lora.contents[0] as Buffer));
    expect(await fileSha256(path.join(sb.models, 'controlnet/sdxl/my-canny.safetensors'))).toBe(sha256(cn.contents[0] as Buffer));
    const site = civitai.requests.filter((q) => q.host === 'site');
    const storage = civitai.requests.filter((q) => q.host === 'storage');
    expect(site.length).toBeGreaterThan(0);
    expect(site.every((q) => q.authorization === `Bearer ${TOKEN}` && !q.url.includes('token='))).toBe(true);
    expect(storage.length).toBeGreaterThan(0);
    expect(storage.some((q) => q.authorization !== undefined || q.url.includes(TOKEN))).toBe(false);
    expect(await exists(path.join(sb.dir, 'evil.safetensors'))).toBe(false);
    expect(await exists(path.join(sb.models, 'evil.safetensors'))).toBe(false);
    await noSecrets(r);
  });

  it('a warm start knows the derived dests without the network; status shows them', async () => {
    sb = await sandbox();
    const lora = version('LORA', [{ name: 'warm.safetensors' }]);
    await sb.writeManifest([{ source: `civitai://${lora.id}` }]);
    expect((await runCli(['sync'], env())).code).toBe(0);
    civitai.requests.length = 0;
    const again = await runCli(['sync', '--json'], env());
    expect(again.code).toBe(0);
    expect(json(again).entries[0]).toMatchObject({ dest: 'loras/warm.safetensors', state: 'present' });
    const status = await runCli(['status', '--json'], env());
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ entries: [{ dest: 'loras/warm.safetensors', state: 'present' }] });
    expect(civitai.requests).toEqual([]);
  });

  it('before its first sync a dest-less entry is listed by its source; plan derives it and sizes it from sizeKB', async () => {
    sb = await sandbox();
    const lora = version('LORA', [{ name: 'planned.safetensors', bytes: 300_000 }]);
    await sb.writeManifest([{ source: `civitai://${lora.id}` }]);
    const status = await runCli(['status', '--json'], env());
    expect(JSON.parse(status.stdout)).toMatchObject({ entries: [{ dest: `<civitai://${lora.id}>`, state: 'never-synced' }] });
    const plan = await runCli(['plan', '--json'], env());
    expect(plan.code).toBe(0);
    const p = JSON.parse(plan.stdout) as { entries: Array<{ dest: string; action: string; size: number }>; bytesToFetch: number };
    expect(p.entries[0]).toMatchObject({ dest: 'loras/planned.safetensors', action: 'fetch' });
    // sizeKB is approximate: close to the file's size, never taken as exact.
    expect(Math.abs(p.bytesToFetch - (lora.contents[0] as Buffer).length)).toBeLessThan(2048);
  });

  it('file: and ?type= pick a version\'s other files; a file\'s own type (VAE) decides its folder', async () => {
    sb = await sandbox();
    const v = version('Checkpoint', [{ name: 'base.safetensors' }, { name: 'baked-vae.safetensors', type: 'VAE' }, { name: 'pruned.safetensors', type: 'Pruned Model' }]);
    await sb.writeManifest([
      { source: `civitai://${v.id}` },
      { source: `civitai://${v.id}`, file: 'baked-vae.safetensors' },
      { source: `civitai://${v.id}?type=Pruned%20Model` },
    ]);
    const r = await runCli(['sync', '--json'], env());
    expect(r.code).toBe(0);
    expect(json(r).entries.map((e) => e.dest)).toEqual(['checkpoints/base.safetensors', 'vae/baked-vae.safetensors', 'checkpoints/pruned.safetensors']);
    expect(await fileSha256(path.join(sb.models, 'vae/baked-vae.safetensors'))).toBe(sha256(v.contents[1] as Buffer));
    expect(await fileSha256(path.join(sb.models, 'checkpoints/pruned.safetensors'))).toBe(sha256(v.contents[2] as Buffer));
  });

  it('lock pins version, file, sha256 and the derived dest: a fresh node syncs from the lock without asking the API', async () => {
    sb = await sandbox();
    const v = version('Upscaler', [{ name: '4x-ultra.pth', format: 'PickleTensor' }]);
    await sb.writeManifest([{ source: `civitai://${v.id}`, allow_pickle: true }]);
    const lock = await runCli(['lock', '--json'], env());
    expect(lock.code).toBe(0);
    const written = JSON.parse(lock.stdout) as { entries: Array<Record<string, unknown>> };
    expect(written.entries[0]).toMatchObject({
      source: `civitai://${v.id}`,
      dest: 'upscale_models/4x-ultra.pth',
      destDerived: true,
      size: (v.contents[0] as Buffer).length,
      sha256: sha256(v.contents[0] as Buffer),
      sha256From: 'civitai',
      civitai: { version: v.id, file: '4x-ultra.pth', type: 'Model', format: 'PickleTensor' },
    });
    await rm(sb.state, { recursive: true, force: true });
    civitai.requests.length = 0;
    const r = await runCli(['sync'], env());
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'upscale_models/4x-ultra.pth'))).toBe(sha256(v.contents[0] as Buffer));
    expect(civitai.requests.filter((q) => q.url.startsWith('/api/v1/'))).toEqual([]);
    civitai.requests.length = 0;
    await rm(sb.state, { recursive: true, force: true });
    // The dest comes from the lock: even a lost state DB is a network-free verification (a re-hash), no Civitai call.
    expect((await runCli(['sync'], env())).code).toBe(0);
    expect(civitai.requests).toEqual([]);
  });

  it('a signed storage URL that expires between chunks is asked for again, and the chunks already in are kept', async () => {
    sb = await sandbox();
    const v = version('Checkpoint', [{ name: 'big.safetensors', bytes: 12 * MiB }]);
    civitai.expireAfter.set(`${v.id}/0`, 1);
    await sb.writeManifest([{ source: `civitai://${v.id}` }]);
    civitai.requests.length = 0;
    const r = await runCli(['sync'], env({ MODELSYNC_CONNECTIONS: '1' }));
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/big.safetensors'))).toBe(sha256(v.contents[0] as Buffer));
    expect(civitai.requests.some((q) => q.host === 'storage' && q.status === 403)).toBe(true);
    expect(civitai.requests.filter((q) => q.url.startsWith('/api/download/')).length).toBeGreaterThanOrEqual(2);
    // Every byte once, plus the 1-byte probe that learns the exact size (the API only approximates it).
    expect(civitai.bytesServed.get(`${v.id}/0`)).toBe((v.contents[0] as Buffer).length + 1);
    expect(await readdir(path.join(sb.models, '.modelsync-store/tmp'))).toEqual([]);
  });

  it('429 with Retry-After: 1 is waited out; a Retry-After past the cap is one line (E_RATE_LIMITED)', async () => {
    sb = await sandbox();
    const v = version('LORA', [{ name: 'slow.safetensors' }]);
    await sb.writeManifest([{ source: `civitai://${v.id}` }]);
    civitai.rateLimit = { times: 1, retryAfter: '1' };
    expect((await runCli(['sync'], env())).code).toBe(0);
    const w = version('LORA', [{ name: 'slower.safetensors' }]);
    await sb.writeManifest([{ source: `civitai://${w.id}` }]);
    civitai.rateLimit = { times: 1, retryAfter: '86400' };
    const r = await runCli(['sync', '--json'], env());
    expect(r.code).toBe(1);
    expect(json(r).entries[0]?.error?.code).toBe('E_RATE_LIMITED');
    expect(siteRequests()).toBeGreaterThan(0);
  });

  it('the daemon lists a dest-less entry by its source until a sync derives its dest, then under the dest', async () => {
    sb = await sandbox();
    const lora = version('LORA', [{ name: 'daemon.safetensors' }]);
    await sb.writeManifest([{ source: `civitai://${lora.id}`, required: false }]);
    // The first sync cannot reach the version (rate limited past the cap): the entry is not placed.
    civitai.rateLimit = { times: 1, retryAfter: '86400' };
    const port = await freePort();
    const d = startRun([], env(), port);
    const label = `<civitai://${lora.id}>`;
    // The startup pass syncs required entries only; this one's first try is the full sync after it.
    const first = await waitFor('the first full sync', async () => {
      const s = await d.status().catch(() => undefined);
      return s?.entries[0]?.state === 'failed' ? s : undefined;
    });
    expect(first.entries).toEqual([expect.objectContaining({ dest: label, state: 'failed', verified: false, required: false })]);
    const r = await runCli(['resync', '--control', `127.0.0.1:${port}`], env());
    expect(r.code).toBe(0);
    const after = await d.status();
    expect(after.entries).toEqual([expect.objectContaining({ dest: 'loras/daemon.safetensors', verified: true })]);
  });
});
