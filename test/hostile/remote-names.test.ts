/**
 * Issue 13, class 1: every name a remote party supplies is validated before it touches the file
 * system. A Hub mirror (HF_ENDPOINT) that lies in paths-info or in a revision's sha must fail the
 * entry it lied about, with the value named (escaped, truncated), and nothing outside the store
 * may be read, linked or removed because of it. Unit-level parsing: test/hf-paths-info.test.ts.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, type Sandbox } from '../support/cli.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { gitBlobSha1Hex, makeSafetensors } from '../support/hub.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { addModel, exists, sha256, type TestModel } from '../support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;

beforeEach(() => {
  hub.lies.clear();
});

interface JsonEntry {
  dest: string;
  state: string;
  error?: { code: string; message: string };
}

async function syncJson(args: string[] = []): Promise<{ code: number | null; entries: JsonEntry[]; stderr: string; stdout: string }> {
  const r = await runCli(['sync', '--json', ...args], sb.env());
  expect(r.stderr).not.toMatch(/internal error|unexpected error/);
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  const parsed = JSON.parse(r.stdout) as { entries: JsonEntry[] };
  return { code: r.code, entries: parsed.entries, stderr: r.stderr, stdout: r.stdout };
}

/** The content id that, used as a blob name, reaches `victim` from STORE/blobs/sha256/<xx>/. */
function escapingOid(victim: string): string {
  const blobs = path.join(sb.models, '.modelsync-store', 'blobs');
  // blobPath is blobs/<algo>/<oid[0..2]>/<oid>: an oid starting with ".." climbs out of <algo>.
  const oid = path.relative(blobs, victim);
  expect(oid.startsWith('..')).toBe(true);
  return oid;
}

async function model(bytes: number): Promise<TestModel> {
  sb = await sandbox(hub.endpoint);
  const m = addModel(hub, bytes);
  await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
  return m;
}

describe('hostile names in Hub answers (issue 13, class 1)', () => {
  it('an lfs.oid that is a path to a file of the right size is refused: never linked into the models dir', async () => {
    const m = await model(150_000);
    const victim = path.join(sb.dir, 'victim.bin');
    await writeFile(victim, Buffer.alloc(m.content.length, 0x41));
    hub.lies.about(m.path, { lfsOid: escapingOid(victim) });
    const r = await syncJson();
    expect((await stat(victim)).nlink).toBe(1);
    expect(await exists(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(false);
    expect(r.code).toBe(1);
    expect(r.entries[0]?.error?.code).toBe('E_REMOTE_INVALID');
    expect(r.entries[0]?.error?.message).toContain(JSON.stringify(escapingOid(victim)));
  });

  it('an lfs.oid that is a path to a file of another size is refused: the file is never removed', async () => {
    const m = await model(150_000);
    const victim = path.join(sb.dir, 'victim.bin');
    await writeFile(victim, 'precious');
    hub.lies.about(m.path, { lfsOid: escapingOid(victim) });
    const r = await syncJson();
    expect(await exists(victim)).toBe(true);
    expect(await readFile(victim, 'utf8')).toBe('precious');
    expect(r.code).toBe(1);
    expect(r.entries[0]?.error?.code).toBe('E_REMOTE_INVALID');
  });

  it.each([
    ['not hex', 'z'.repeat(64)],
    ['upper-case hex', 'A'.repeat(64)],
    ['one character too long', 'a'.repeat(65)],
    ['a kilobyte long', 'b'.repeat(1024)],
    ['empty', ''],
    ['a number', 12345],
    ['an object', { path: '../../x' }],
    ['null', null],
  ])('an lfs.oid that is %s fails the entry with the value named, escaped and cut short', async (_what, oid) => {
    const m = await model(120_000);
    hub.lies.about(m.path, { lfsOid: oid });
    const r = await syncJson();
    expect(r.code).toBe(1);
    expect(r.entries[0]?.error?.code).toBe('E_REMOTE_INVALID');
    const message = r.entries[0]?.error?.message ?? '';
    expect(message).toContain('lfs.oid');
    expect(message.length).toBeLessThan(400);
    const report = await checkFinalPaths(sb.models, { 'checkpoints/m.safetensors': m.sha256 });
    expect(report).toMatchObject({ corrupt: [], blobs: 0, published: 0 });
  });

  it('a git oid of a plain file that is not 40 hex, or an impossible size, fails that entry only', async () => {
    sb = await sandbox(hub.endpoint);
    const plain = Buffer.from('{"a": 1}\n');
    const m = addModel(hub, 100_000, { extra: [{ path: 'config.json', content: plain, lfs: false }, { path: 'other.json', content: plain, lfs: false }] });
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/m.safetensors' },
      { source: `hf://${m.repo}/config.json`, dest: 'configs/m.json' },
      { source: `hf://${m.repo}/other.json`, dest: 'configs/other.json' },
    ]);
    hub.lies.about('config.json', { oid: `../../${gitBlobSha1Hex(plain)}` });
    hub.lies.about('other.json', { size: -1 });
    const r = await syncJson();
    expect(r.code).toBe(1);
    expect(r.entries.map((e) => [e.dest, e.state, e.error?.code])).toEqual([
      ['checkpoints/m.safetensors', 'published', undefined],
      ['configs/m.json', 'failed', 'E_REMOTE_INVALID'],
      ['configs/other.json', 'failed', 'E_REMOTE_INVALID'],
    ]);
    expect(r.entries[1]?.error?.message).toContain('oid');
    expect(r.entries[2]?.error?.message).toContain('size -1');
  });

  it('an entry for a path nobody asked about is not taken: it cannot poison the next resolve', async () => {
    sb = await sandbox(hub.endpoint);
    const b = makeSafetensors(90_000, 4242);
    const m = addModel(hub, 100_000, { extra: [{ path: 'b.safetensors', content: b }] });
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    // Asked for model.safetensors only, the mirror also "describes" b.safetensors, wrongly.
    const wrong = { type: 'file', path: 'b.safetensors', oid: 'c'.repeat(40), size: b.length, lfs: { oid: sha256(Buffer.alloc(b.length, 1)), size: b.length, pointerSize: 130 } };
    hub.lies.about(m.path, { extra: [wrong] });
    const first = await syncJson();
    expect(first.entries.map((e) => e.error?.message)).toEqual([undefined]);
    hub.lies.clear();
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/m.safetensors' },
      { source: `hf://${m.repo}/b.safetensors`, dest: 'checkpoints/b.safetensors' },
    ]);
    const r = await syncJson();
    expect(r.entries.map((e) => [e.state, e.error?.code])).toEqual([['present', undefined], ['published', undefined]]);
    expect(r.code).toBe(0);
  });

  it('an answer with an item that is not even an object fails at once, without a retry loop', async () => {
    const m = await model(100_000);
    hub.lies.about(m.path, { extra: [null] });
    hub.resetStats();
    const r = await syncJson();
    expect(r.code).toBe(1);
    expect(r.entries[0]?.error?.code).toBe('E_REMOTE_INVALID');
    expect(hub.stats.requests.filter((q) => q.url.includes('/paths-info/')).length).toBe(1);
  });

  it.each([
    ['a path', '../../../../etc'],
    ['41 hex', 'a'.repeat(41)],
    ['not a string', 42],
  ])('a revision whose sha is %s fails every entry of that repo, naming the value', async (_what, sha) => {
    const m = await model(100_000);
    hub.lies.revision(m.repo, sha);
    const r = await syncJson();
    expect(r.code).toBe(1);
    expect(r.entries[0]?.error?.code).toBe('E_REMOTE_INVALID');
    expect(r.entries[0]?.error?.message).toContain(JSON.stringify(sha));
    expect(await exists(path.join(sb.models, 'checkpoints'))).toBe(false);
  });

  it('`modelsync lock` refuses the same lies with one clear line, and writes no lock', async () => {
    const m = await model(100_000);
    hub.lies.about(m.path, { lfsOid: '../../../x' });
    const r = await runCli(['lock', '--json'], sb.env());
    expect(r.code).toBe(1);
    expect((JSON.parse(r.stdout) as { errors: { code: string }[] }).errors.map((e) => e.code)).toEqual(['E_REMOTE_INVALID']);
    expect(r.stderr).not.toMatch(/internal error|unexpected error/);
    expect(await exists(path.join(sb.dir, 'manifest.lock.json'))).toBe(false);
  });
});
