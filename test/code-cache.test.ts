import { execFile } from 'node:child_process';
import { chmod, chown, copyFile, lstat, mkdir, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { REPO_ROOT, sandbox, type Sandbox } from './support/cli.js';

const run = promisify(execFile);

// bin/load-bundle.js: the two bundles compiled through V8's code cache in dist/.v8-cache/.
// Each test runs a copy of bin/ and the bundles in its sandbox, so the cache it reads and
// writes is its own.
let sb: Sandbox;
let pkg: string;
let cacheDir: string;

beforeEach(async () => {
  sb = await sandbox();
  pkg = path.join(sb.dir, 'pkg');
  cacheDir = path.join(pkg, 'dist', '.v8-cache');
  await mkdir(path.join(pkg, 'bin'), { recursive: true });
  await mkdir(path.join(pkg, 'dist'));
  for (const f of ['bin/modelsync.js', 'bin/load-bundle.js', 'bin/package.json', 'dist/modelsync.cjs', 'dist/cli.cjs']) await copyFile(path.join(REPO_ROOT, f), path.join(pkg, f));
  await symlink(path.join(REPO_ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
});

afterEach(async () => {
  await sb.cleanup();
});

/** `modelsync --help` from the copy: it loads both bundles (the bin's, then the CLI's). */
async function help(env: Record<string, string> = {}): Promise<string> {
  const r = await run(process.execPath, [path.join(pkg, 'bin', 'modelsync.js'), '--help'], { env: { ...sb.env(), ...env } });
  // Nothing on stderr: no ExperimentalWarning from how the bundles are loaded.
  expect(r.stderr).toBe('');
  return r.stdout;
}

async function cacheFiles(): Promise<string[]> {
  return (await readdir(cacheDir).catch(() => [])).sort();
}

async function cacheOf(bundle: string): Promise<string> {
  const name = (await cacheFiles()).find((n) => n.startsWith(`${bundle}-${process.version}-`));
  if (name === undefined) throw new Error(`no cache for ${bundle}`);
  return path.join(cacheDir, name);
}

const isRoot = process.getuid?.() === 0;

describe('the bundles\' code cache', () => {
  it('is written on the first run, one file per bundle, and read as it is afterwards', async () => {
    const out = await help();
    expect(out).toMatch(/usage: modelsync/i);
    expect((await cacheFiles()).map((n) => n.split('-')[0])).toEqual(['cli.cjs', 'modelsync.cjs']);
    const file = await cacheOf('cli.cjs');
    const before = await stat(file);
    expect(before.size).toBeGreaterThan(0);
    expect(before.mode & 0o022).toBe(0);
    expect(await help()).toBe(out);
    // The same command compiles nothing new: the file is not written again.
    const after = await stat(file);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
  });

  it('a corrupt cache costs a compile: same output, and the file is replaced', async () => {
    const out = await help();
    const file = await cacheOf('cli.cjs');
    await writeFile(file, Buffer.alloc(4096, 0x5a));
    expect(await help()).toBe(out);
    const data = await readFile(file);
    expect(data.equals(Buffer.alloc(4096, 0x5a))).toBe(false);
  });

  it('a cache file others may write is never read (and is replaced by one they may not)', async () => {
    await help();
    const file = await cacheOf('cli.cjs');
    const ino = (await stat(file)).ino;
    await chmod(file, 0o666);
    await help();
    const now = await stat(file);
    expect(now.ino).not.toBe(ino);
    expect(now.mode & 0o777).toBe(0o644);
  });

  it('a symlink in the cache\'s place is not followed, for reading or writing', async () => {
    await help();
    const file = await cacheOf('cli.cjs');
    const outside = path.join(sb.dir, 'outside.bin');
    await writeFile(outside, 'not code');
    await rm(file);
    await symlink(outside, file);
    await help();
    expect(await readFile(outside, 'utf8')).toBe('not code');
    expect((await lstat(file)).isFile()).toBe(true);
  });

  it('a rebuilt bundle gets a new file, and the old one is removed', async () => {
    await help();
    const old = await cacheOf('cli.cjs');
    // A rebuild of the same length: V8 would take the old cache for it; the name must not.
    const bundle = path.join(pkg, 'dist', 'cli.cjs');
    const later = new Date(Date.now() + 60_000);
    await utimes(bundle, later, later);
    await help();
    const fresh = await cacheOf('cli.cjs');
    expect(fresh).not.toBe(old);
    expect((await cacheFiles()).filter((n) => n.startsWith('cli.cjs-'))).toEqual([path.basename(fresh)]);
  });

  it('NODE_DISABLE_COMPILE_CACHE turns it off', async () => {
    await help({ NODE_DISABLE_COMPILE_CACHE: '1' });
    expect(await cacheFiles()).toEqual([]);
  });

  it.skipIf(!isRoot)('only the bundles\' owner writes the cache, and only a cache of that owner is read', async () => {
    const other = 4242;
    for (const f of ['dist/modelsync.cjs', 'dist/cli.cjs']) await chown(path.join(pkg, f), other, other);
    const out = await help();
    expect(await cacheFiles()).toEqual([]);
    // A cache root left behind (root is not the bundles' owner here) is not taken either.
    await chown(path.join(pkg, 'dist', 'cli.cjs'), 0, 0);
    await help();
    const file = await cacheOf('cli.cjs');
    await chown(file, other, other);
    const ino = (await stat(file)).ino;
    expect(await help()).toBe(out);
    // Not read, so written again at exit (root owns the bundle now): a new file.
    expect((await stat(file)).ino).not.toBe(ino);
  });
});
