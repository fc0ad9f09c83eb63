/**
 * hostile-world.md, bad input: paths. Every bad `dest` refused with nothing written anywhere; a
 * symlink planted in the models dir never followed for writing; a remote name that would escape
 * never used as a path. Unit-level dest checks are in test/manifest.test.ts.
 */
import { lstat, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, sandbox, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { makeSafetensors } from '../support/hub.js';
import { exists, fileSha256, sha256 } from '../support/models.js';

const model = makeSafetensors(200_000, 77);
const ESCAPING_PATH = '/dl/..%2F..%2F..%2Fescape.safetensors';
let web: ByteServer;
let sb: Sandbox;

beforeAll(async () => {
  web = await startByteServer({
    files: { '/m.safetensors': model, [ESCAPING_PATH]: model },
    headers: { 'content-disposition': 'attachment; filename="../../../../escape.safetensors"' },
  });
});
afterAll(async () => {
  await web.close();
});
afterEach(async () => {
  await sb?.cleanup();
});

/** Every file under `dir`, relative, symlinks listed as themselves. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  await walk(dir);
  return out.sort();
}

describe('path safety (hostile-world.md, bad input)', () => {
  it('the whole bad-dest list: exit 2, every entry named with its field, nothing written anywhere', async () => {
    sb = await sandbox();
    const bad = ['../x', '/etc/x', 'checkpoints/../../b', 'C:\\x', '\\\\host\\s', 'checkpoints/a\u0000b', `checkpoints/${'n'.repeat(300)}`];
    await sb.writeManifest(bad.map((dest, i) => ({ source: `${web.url}/m.safetensors?i=${i}`, dest, sha256: sha256(model) })));
    const before = await tree(sb.dir);
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(2);
    for (let i = 0; i < bad.length; i++) expect(r.stderr).toMatch(new RegExp(`models\\[${i}\\]\\.dest: `));
    expect(await tree(sb.dir)).toEqual(before);
    expect(await exists(sb.state)).toBe(false);
    expect(web.requests).toEqual([]);
  });

  it('a folder of the models dir planted as a symlink to the outside is not written through', async () => {
    sb = await sandbox();
    const outside = path.join(sb.dir, 'outside');
    await mkdir(outside);
    await symlink(outside, path.join(sb.models, 'checkpoints'));
    await sb.writeManifest([{ source: `${web.url}/m.safetensors`, dest: 'checkpoints/x.safetensors', sha256: sha256(model) }]);
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/FAILED +checkpoints\/x\.safetensors: .*checkpoints is a symlink; refusing to write through it/);
    expect(await readdir(outside)).toEqual([]);
    expect(r.stderr).not.toContain('internal error');
  });

  it('a dest planted as a symlink to a file outside is replaced, never written through', async () => {
    sb = await sandbox();
    const victim = path.join(sb.dir, 'precious.txt');
    await writeFile(victim, 'precious');
    await mkdir(path.join(sb.models, 'loras'));
    await symlink(victim, path.join(sb.models, 'loras/y.safetensors'));
    await sb.writeManifest([{ source: `${web.url}/m.safetensors`, dest: 'loras/y.safetensors', sha256: sha256(model) }]);
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(await readFile(victim, 'utf8')).toBe('precious');
    expect((await lstat(path.join(sb.models, 'loras/y.safetensors'))).isSymbolicLink()).toBe(false);
    expect(await fileSha256(path.join(sb.models, 'loras/y.safetensors'))).toBe(sha256(model));
  });

  it('a remote name that would escape (URL path, Content-Disposition) is never used as a path', async () => {
    sb = await sandbox();
    await sb.writeManifest([{ source: `${web.url}${ESCAPING_PATH}?filename=../../../escape.safetensors`, dest: 'checkpoints/safe.safetensors', sha256: sha256(model) }]);
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(web.requests.some((q) => q.path === ESCAPING_PATH)).toBe(true);
    const files = await tree(sb.dir);
    expect(files.filter((f) => f.includes('escape'))).toEqual([]);
    // Nothing outside the models dir, the store and the state dir (invariant 6).
    expect(files.filter((f) => !f.startsWith('models/') && !f.startsWith('state/'))).toEqual(['manifest.json']);
    expect(files.filter((f) => f.startsWith('models/') && !f.startsWith('models/.modelsync-store/'))).toEqual(['models/checkpoints/safe.safetensors']);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  });
});
