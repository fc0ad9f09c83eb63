/**
 * hostile-world.md, remote parties: a Civitai that lies, or refuses. Every value its API returns
 * is checked before use (names, hashes, sizes, ids, types); a derived dest passes every rule a
 * written one does; the token reaches Civitai alone, never a storage host nor a URL; and each
 * refusal (login required, early access, not downloadable, deleted, a bad token) is one line with
 * a stable code naming CIVITAI_TOKEN where it helps.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { startCivitai, type CivitaiStandIn, type CivitaiTestVersion } from '../support/civitai.js';
import { makeSafetensors } from '../support/hub.js';
import { exists, fileSha256, sha256 } from '../support/models.js';
import { secretsInFiles } from '../support/scan-secrets.js';

const TOKEN = 'CIVITAItokenDoNotLeak0123456789';
let civitai: CivitaiStandIn;
let sb: Sandbox;
let nextId = 200_000;

beforeAll(async () => {
  civitai = await startCivitai();
  civitai.tokens.add(TOKEN);
});
afterAll(async () => {
  await civitai.close();
});
afterEach(async () => {
  await sb?.cleanup();
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({ CIVITAI_ENDPOINT: civitai.endpoint, CIVITAI_TOKEN: TOKEN, MODELSYNC_RETRY_ATTEMPTS: '2', ...extra });
}

function add(v: Partial<CivitaiTestVersion> & { name?: string } = {}): { id: number; content: Buffer } {
  const id = ++nextId;
  const content = makeSafetensors(40_000, id);
  civitai.add({ id, modelId: id + 3, modelType: 'LORA', files: [{ name: v.name ?? `f${id}.safetensors`, content }], ...v });
  return { id, content };
}

/** The API's own answer for a version, with `edit` applied: a hostile API. */
function lie(edit: (answer: Record<string, unknown>, file: Record<string, unknown>) => void): { id: number; content: Buffer } {
  const { id, content } = add();
  const file: Record<string, unknown> = { id: 1, name: `lie${id}.safetensors`, type: 'Model', sizeKB: content.length / 1024, metadata: { format: 'SafeTensor', size: 'full', fp: 'fp16' }, hashes: { SHA256: sha256(content).toUpperCase() }, primary: true };
  const answer: Record<string, unknown> = { id, modelId: id + 3, model: { type: 'LORA' }, files: [file], availability: 'Public', usageControl: 'Download' };
  edit(answer, file);
  civitai.add({ id, modelId: id + 3, modelType: 'LORA', files: [{ name: `f${id}.safetensors`, content }], rawAnswer: answer });
  return { id, content };
}

function entries(r: CliResult): Array<{ dest: string; state: string; error?: { code: string; message: string } }> {
  return (JSON.parse(r.stdout) as { entries: ReturnType<typeof entries> }).entries;
}

async function sync(models: Record<string, unknown>[], extra: Record<string, string> = {}): Promise<CliResult> {
  await sb.writeManifest(models);
  const r = await runCli(['sync', '--json'], env(extra));
  expect(r.stderr).not.toContain('internal error');
  expect(r.stdout + r.stderr).not.toContain(TOKEN);
  return r;
}

/** Every file under the models dir but the store's own. */
async function filesUnder(dir: string): Promise<string[]> {
  const all = (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => path.relative(dir, path.join(d.parentPath, d.name)));
  return all.filter((f) => !f.startsWith('.modelsync-store'));
}

describe('a Civitai that lies (hostile-world.md, remote parties)', () => {
  it.each([
    ['a path that climbs out (into the sandbox, from models/loras)', '../../escaped.safetensors', 'E_PATH_UNSAFE'],
    ['a path into a subfolder', 'sub/dir.safetensors', 'E_PATH_UNSAFE'],
    ['a Windows path', '..\\..\\escaped.safetensors', 'E_PATH_UNSAFE'],
    ['a hidden name', '.modelsync-store', 'E_PATH_UNSAFE'],
    ['a control character', 'bad\u0007name.safetensors', 'E_PATH_UNSAFE'],
    ['a 300-byte name', `${'x'.repeat(300)}.safetensors`, 'E_PATH_UNSAFE'],
  ])('a file name with %s is never a dest: the entry fails, nothing is written', async (_what, name, code) => {
    sb = await sandbox();
    const v = add({ name });
    const r = await sync([{ source: `civitai://${v.id}` }]);
    expect(r.code).toBe(1);
    expect(entries(r)[0]?.error?.code).toBe(code);
    expect(await filesUnder(sb.models)).toEqual([]);
    expect(await exists(path.join(sb.dir, 'escaped.safetensors'))).toBe(false);
  });

  it('the same unsafe name is harmless when the entry writes its own dest (a remote name is never a path)', async () => {
    sb = await sandbox();
    const v = add({ name: '../../escaped.safetensors' });
    const r = await sync([{ source: `civitai://${v.id}`, dest: 'loras/mine.safetensors' }]);
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'loras/mine.safetensors'))).toBe(sha256(v.content));
  });

  it('a sha256 that is not 64 hex is no sha256: the entry fails unless the manifest gives one', async () => {
    sb = await sandbox();
    const v = lie((_a, f) => (f.hashes = { SHA256: '../../x' }));
    const r = await sync([{ source: `civitai://${v.id}` }]);
    expect(r.code).toBe(1);
    expect(entries(r)[0]?.error?.code).toBe('E_MANIFEST');
    const ok = await sync([{ source: `civitai://${v.id}`, sha256: sha256(v.content) }]);
    expect(ok.code).toBe(0);
  });

  it('a sha256 the bytes do not match: nothing published, the entry fails with the mismatch', async () => {
    sb = await sandbox();
    const v = lie((_a, f) => (f.hashes = { SHA256: 'AB'.repeat(32) }));
    const r = await sync([{ source: `civitai://${v.id}` }]);
    expect(r.code).toBe(1);
    expect(entries(r)[0]?.error?.code).toBe('E_HASH_MISMATCH');
    expect(await filesUnder(sb.models)).toEqual([]);
  });

  it.each([
    ['negative', -5],
    ['absurd', 1e30],
    ['not a number', 'lots'],
  ])('a %s sizeKB is ignored: the exact size comes from the download, and the hash decides', async (_what, sizeKB) => {
    sb = await sandbox();
    const v = lie((_a, f) => (f.sizeKB = sizeKB));
    const r = await sync([{ source: `civitai://${v.id}` }]);
    expect(r.code).toBe(0);
    expect(entries(r)[0]?.dest).toBe(`loras/lie${v.id}.safetensors`);
  });

  it.each([
    ['for another version', (a: Record<string, unknown>) => (a.id = 1)],
    ['without a files list', (a: Record<string, unknown>) => (a.files = 'none')],
    ['with a model type that is a path', (a: Record<string, unknown>) => (a.model = { type: '../../loras' })],
  ])('an answer %s is refused as unusable (E_HTTP), nothing fetched', async (_what, edit) => {
    sb = await sandbox();
    const v = lie((a) => edit(a));
    civitai.requests.length = 0;
    const r = await sync([{ source: `civitai://${v.id}` }]);
    expect(r.code).toBe(1);
    expect(entries(r)[0]?.error?.code).toBe('E_HTTP');
    expect(civitai.requests.filter((q) => q.host === 'storage')).toEqual([]);
  });

  it('a model type with no ComfyUI folder asks for a dest; a derived dest that clashes with another entry is refused', async () => {
    sb = await sandbox();
    const wf = add({ modelType: 'Workflows', name: 'flow.zip' });
    const clash = add({ name: 'taken.safetensors' });
    const other = makeSafetensors(1000, 1);
    const r = await sync([
      { source: `civitai://${wf.id}` },
      { source: `civitai://${clash.id}` },
      { source: `civitai://${add().id}`, dest: 'loras/taken.safetensors', sha256: sha256(other) },
    ]);
    expect(r.code).toBe(1);
    expect(entries(r).map((e) => e.error?.code)).toEqual(['E_MANIFEST', 'E_MANIFEST', 'E_HASH_MISMATCH']);
  });

  it('a pickle file needs allow_pickle when its dest is derived too', async () => {
    sb = await sandbox();
    const v = add({ name: 'legacy.ckpt', modelType: 'Checkpoint' });
    const r = await sync([{ source: `civitai://${v.id}` }]);
    expect(r.code).toBe(1);
    expect(entries(r)[0]?.error?.code).toBe('E_MANIFEST');
    expect(entries(r)[0]?.error?.message).toMatch(/pickle/);
  });
});

describe('a Civitai that trickles (issue 13, class 8)', () => {
  afterEach(() => {
    civitai.apiBytesPerSecond = undefined;
    civitai.loginPageBytesPerSecond = undefined;
  });

  it('its API trickling an answer is cut off by the minimum rate, naming the host; the retries end', async () => {
    sb = await sandbox();
    const v = add();
    civitai.apiBytesPerSecond = 20;
    civitai.requests.length = 0;
    const r = await sync([{ source: `civitai://${v.id}`, dest: 'loras/t.safetensors' }], { MODELSYNC_MIN_RATE_WINDOW: '1' });
    expect(r.code).toBe(1);
    expect(entries(r)[0]?.error?.code).toBe('E_TOO_SLOW');
    expect(entries(r)[0]?.error?.message).toMatch(/127\.0\.0\.1:\d+ sent/);
    // MODELSYNC_RETRY_ATTEMPTS=2: asked twice, then given up; nothing downloaded.
    expect(civitai.requests.filter((q) => q.url.startsWith('/api/v1/')).length).toBe(2);
    expect(civitai.requests.filter((q) => q.url.startsWith('/api/download/'))).toEqual([]);
  });

  it('its login page trickling (what a refusal is read from) is cut off the same way, and the entry fails', async () => {
    sb = await sandbox();
    const v = add({ requiresLogin: true });
    civitai.loginPageBytesPerSecond = 20;
    const r = await sync([{ source: `civitai://${v.id}` }], { CIVITAI_TOKEN: '', MODELSYNC_MIN_RATE_WINDOW: '1' });
    expect(r.code).toBe(1);
    expect(entries(r)[0]?.error?.code).toBe('E_TOO_SLOW');
    expect(entries(r)[0]?.error?.message).toMatch(/127\.0\.0\.1:\d+ sent/);
    expect(await filesUnder(sb.models)).toEqual([]);
  });
});

describe('Civitai refusals: one line each, a stable code', () => {
  it('login required (a redirect to the login page, or a 404 for a version the API lists) names CIVITAI_TOKEN', async () => {
    sb = await sandbox();
    const login = add({ requiresLogin: true });
    const hidden = add({ requiresLogin: '404' });
    const r = await sync([{ source: `civitai://${login.id}` }, { source: `civitai://${hidden.id}` }], { CIVITAI_TOKEN: '' });
    expect(r.code).toBe(1);
    for (const e of entries(r)) {
      expect(e.error?.code).toBe('E_AUTH');
      expect(e.error?.message).toContain('set CIVITAI_TOKEN');
    }
    // With the token, the same entries download.
    const ok = await sync([{ source: `civitai://${login.id}` }, { source: `civitai://${hidden.id}` }]);
    expect(ok.code).toBe(0);
  });

  it('a token Civitai rejects says so (E_AUTH), without printing it', async () => {
    sb = await sandbox();
    const v = add();
    const r = await sync([{ source: `civitai://${v.id}` }], { CIVITAI_TOKEN: 'not-a-valid-token-0123' });
    expect(r.code).toBe(1);
    expect(entries(r)[0]?.error?.code).toBe('E_AUTH');
    expect(entries(r)[0]?.error?.message).toContain('CIVITAI_TOKEN is valid');
    expect(r.stdout + r.stderr).not.toContain('not-a-valid-token-0123');
  });

  it('early access: without a token at once (the API says so), with one the download refusal (E_EARLY_ACCESS)', async () => {
    sb = await sandbox();
    const later = new Date(Date.now() + 86_400_000).toISOString();
    const v = add({ availability: 'EarlyAccess', earlyAccessEndsAt: later, earlyAccessTokens: new Set(['someone-else']) });
    civitai.requests.length = 0;
    const anon = await sync([{ source: `civitai://${v.id}` }], { CIVITAI_TOKEN: '' });
    expect(entries(anon)[0]?.error?.code).toBe('E_EARLY_ACCESS');
    expect(entries(anon)[0]?.error?.message).toContain(later);
    expect(civitai.requests.filter((q) => q.url.startsWith('/api/download/'))).toEqual([]);
    const withToken = await sync([{ source: `civitai://${v.id}` }]);
    expect(withToken.code).toBe(1);
    expect(entries(withToken)[0]?.error?.code).toBe('E_EARLY_ACCESS');
  });

  it('a version that cannot be downloaded at all (on-site generation only) is E_NOT_DOWNLOADABLE; a deleted one E_NOT_FOUND', async () => {
    sb = await sandbox();
    const gen = add({ usageControl: 'Generation' });
    const gone = add({ deleted: true });
    const r = await sync([{ source: `civitai://${gen.id}` }, { source: `civitai://${gone.id}`, dest: 'loras/gone.safetensors' }]);
    expect(r.code).toBe(1);
    expect(entries(r).map((e) => e.error?.code)).toEqual(['E_NOT_DOWNLOADABLE', 'E_NOT_FOUND']);
    expect(civitai.requests.filter((q) => q.url.startsWith(`/api/download/models/${gen.id}`))).toEqual([]);
  });
});

describe('the token stays where it belongs', () => {
  it('a token in a manifest URL is refused at load (exit 2) and never echoed', async () => {
    sb = await sandbox();
    await sb.writeManifest([{ source: `https://civitai.com/api/download/models/5?token=${TOKEN}` }]);
    const r = await runCli(['sync'], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/models\[0\]\.source: .*CIVITAI_TOKEN/);
    expect(r.stdout + r.stderr).not.toContain(TOKEN);
  });

  it('never sent to the storage host, in a URL, to the logs or the state DB, even at trace level and across an expired URL', async () => {
    sb = await sandbox();
    const v = add({ requiresLogin: true });
    civitai.expireAfter.set(`${v.id}/0`, 1);
    civitai.requests.length = 0;
    const r = await sync([{ source: `civitai://${v.id}` }], { MODELSYNC_LOG_LEVEL: 'trace' });
    expect(r.code).toBe(0);
    expect(civitai.requests.filter((q) => q.host === 'storage').every((q) => q.authorization === undefined && !q.url.includes(TOKEN))).toBe(true);
    expect(civitai.requests.every((q) => !q.url.includes('token='))).toBe(true);
    expect(await secretsInFiles([sb.state, sb.models], [TOKEN])).toEqual([]);
    // Nor the signed URL's signature.
    const sigs = civitai.requests.filter((q) => q.host === 'storage').map((q) => new URL(q.url, civitai.storageOrigin).searchParams.get('X-Amz-Signature') ?? 'none');
    for (const s of sigs) expect(r.stdout + r.stderr).not.toContain(s);
  });
});
