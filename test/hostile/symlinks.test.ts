/**
 * Issue 13, class 5: no write follows a symlink, at any moment. A folder of the models dir or of
 * the store that is, or becomes between two writes, a symlink to somewhere else must never
 * receive a byte; neither may a symlink planted where modelsync creates, adopts or opens a file
 * (a partial, a claim's owner file, the state DB). The swaps happen at exact points of a real
 * sync (run in this process, hooked on its own progress events), so they never depend on timing.
 */
import { mkdirSync, renameSync, symlinkSync } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readFile, rename, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { parseManifest } from '../../src/manifest/load.js';
import { ClaimOwner } from '../../src/store/claim.js';
import { openContext } from '../../src/sync/context.js';
import { runSync } from '../../src/sync/engine.js';
import type { EntryState, SyncReport } from '../../src/sync/types.js';
import type { Entry } from '../../src/manifest/types.js';
import { runCli, sandbox, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { makeSafetensors } from '../support/hub.js';
import { exists, sha256 } from '../support/models.js';

const small = [makeSafetensors(90_000, 71), makeSafetensors(95_000, 72), makeSafetensors(99_000, 73)];
// Above SMALL_BLOB_BYTES: fetched under a lease, so dead peers' partials are adopted.
const large = makeSafetensors(2 * 1024 * 1024, 74);
let web: ByteServer;
let sb: Sandbox;
let outside: string;
/** `outside`'s mtime when made: any name created in it, even one removed again, moves it. */
let outsideMtime: bigint;

beforeAll(async () => {
  web = await startByteServer({ files: { '/0.safetensors': small[0] as Buffer, '/1.safetensors': small[1] as Buffer, '/2.safetensors': small[2] as Buffer, '/large.safetensors': large } });
});
afterAll(async () => {
  await web.close();
});
afterEach(async () => {
  await sb?.cleanup();
});

async function fresh(): Promise<void> {
  sb = await sandbox();
  outside = path.join(sb.dir, 'outside');
  await mkdir(outside);
  outsideMtime = (await stat(outside, { bigint: true })).mtimeNs;
}

const entry = (i: number, dest: string): Record<string, unknown> => ({ source: `${web.url}/${i}.safetensors`, dest, sha256: sha256(small[i] as Buffer) });

/** Everything under `outside`, and whether a name came and went there: must stay empty. */
async function leaked(): Promise<string[]> {
  const names = await readdir(outside, { recursive: true });
  const touched = (await stat(outside, { bigint: true })).mtimeNs !== outsideMtime;
  return touched && names.length === 0 ? ['(a name was created and removed)'] : names;
}

/** A sync in this process, with `hook` called on every entry state change, as it happens. */
async function syncWith(models: readonly Record<string, unknown>[], hook: (e: Entry, state: EntryState) => void): Promise<SyncReport> {
  await sb.writeManifest(models);
  const env = sb.env();
  const config = loadConfig({}, env, false);
  const manifest = parseManifest(await readFile(sb.manifest, 'utf8'), sb.manifest);
  const ctx = await openContext(config, silentLogger());
  try {
    return await runSync(ctx, manifest, { events: { entryState: (e, s) => hook(e, s) } });
  } finally {
    ctx.close();
  }
}

/**
 * Replace a folder by a symlink to `outside`, keeping the folder (moved aside, beside it).
 * Synchronous: done inside the progress event, before the sync takes its next step.
 */
function swapForSymlink(dir: string): void {
  renameSync(dir, `${dir}.moved`);
  symlinkSync(outside, dir);
}

describe('no write follows a symlink (issue 13, class 5)', () => {
  it('a models folder swapped for a symlink between two publishes: the second is refused, nothing lands outside', async () => {
    await fresh();
    const folder = path.join(sb.models, 'checkpoints');
    let swapped = false;
    const report = await syncWith([entry(0, 'checkpoints/a.safetensors'), entry(0, 'checkpoints/b.safetensors')], (_e, s) => {
      // Both dests are one blob, published one after the other: swap right after the first.
      if (s === 'published' && !swapped) {
        swapped = true;
        swapForSymlink(folder);
      }
    });
    expect(swapped).toBe(true);
    expect(await leaked()).toEqual([]);
    expect(report.entries.map((r) => r.state).sort()).toEqual(['failed', 'published']);
    expect(report.entries.find((r) => r.state === 'failed')?.error?.code).toBe('E_PATH_UNSAFE');
  });

  it('STORE/tmp swapped for a symlink just before a download opens its partial: the bytes stay in the store', async () => {
    await fresh();
    const tmp = path.join(sb.models, '.modelsync-store', 'tmp');
    let swapped = false;
    const report = await syncWith([entry(1, 'loras/x.safetensors')], (_e, s) => {
      if (s === 'downloading' && !swapped) {
        swapped = true;
        swapForSymlink(tmp);
      }
    });
    expect(swapped).toBe(true);
    expect(await leaked()).toEqual([]);
    // Written where the sync opened its store: the folder that was moved aside, still in the store.
    expect(report.entries.map((r) => r.state)).toEqual(['published']);
  });

  it('a store shard folder swapped for a symlink just before the commit: refused, nothing lands outside', async () => {
    await fresh();
    const hex = sha256(small[2] as Buffer);
    const shard = path.join(sb.models, '.modelsync-store', 'blobs', 'sha256', hex.slice(0, 2));
    let swapped = false;
    const report = await syncWith([entry(2, 'vae/v.safetensors')], (_e, s) => {
      if (s === 'verifying' && !swapped) {
        swapped = true;
        mkdirSync(shard, { recursive: true });
        swapForSymlink(shard);
      }
    });
    expect(swapped).toBe(true);
    expect(await leaked()).toEqual([]);
    expect(report.entries[0]?.error?.code).toBe('E_PATH_UNSAFE');
  });

  it('a store that is a symlink (the default .modelsync-store, or its tmp/) is refused with one line, never written through', async () => {
    await fresh();
    await symlink(outside, path.join(sb.models, '.modelsync-store'));
    await sb.writeManifest([entry(0, 'checkpoints/a.safetensors')]);
    const r = await runCli(['sync'], sb.env());
    expect(await leaked()).toEqual([]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\.modelsync-store is a symlink; refusing to write through it/);
    expect(r.stderr).not.toMatch(/internal error/);

    await sb.cleanup();
    await fresh();
    const store = path.join(sb.models, '.modelsync-store');
    await sb.writeManifest([entry(0, 'checkpoints/a.safetensors')]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    await rename(path.join(store, 'tmp'), path.join(sb.dir, 'old-tmp'));
    await symlink(outside, path.join(store, 'tmp'));
    await sb.writeManifest([entry(0, 'checkpoints/a.safetensors'), entry(1, 'checkpoints/b.safetensors')]);
    const again = await runCli(['sync'], sb.env());
    expect(await leaked()).toEqual([]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/tmp is a symlink; refusing to write through it/);
  });

  it("a dead peer's partial that is a symlink to a file outside is never adopted, opened or chmod'ed", async () => {
    await fresh();
    const store = path.join(sb.models, '.modelsync-store');
    await sb.writeManifest([{ source: `${web.url}/large.safetensors`, dest: 'checkpoints/l.safetensors', sha256: sha256(large) }]);
    // Plant, in a store's tmp/: a partial of the right size that is a link, with a journal that
    // says it holds the first bytes of this very version.
    await mkdir(path.join(store, 'tmp'), { recursive: true });
    const victim = path.join(outside, 'victim.bin');
    await writeFile(victim, Buffer.alloc(large.length, 0x42));
    await chmod(victim, 0o600);
    const base = path.join(store, 'tmp', `sha256-${sha256(large)}.deadbeefdeadbeef`);
    await symlink(victim, `${base}.part`);
    await writeFile(`${base}.journal`, JSON.stringify({ v: 1, version: `sha256:${sha256(large)}`, size: large.length, chunkSize: 1024 * 1024, written: [65_536, 0] }));
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect((await stat(victim)).mode & 0o777).toBe(0o600);
    expect((await readFile(victim)).equals(Buffer.alloc(large.length, 0x42))).toBe(true);
    expect((await checkFinalPaths(sb.models, { 'checkpoints/l.safetensors': sha256(large) })).corrupt).toEqual([]);
  });

  it("a symlink planted at a claim's owner-file name is not written through", async () => {
    await fresh();
    const tmp = path.join(sb.dir, 'store-tmp');
    const leases = path.join(sb.dir, 'store-leases');
    await mkdir(tmp);
    await mkdir(leases);
    const victim = path.join(outside, 'passwd');
    await writeFile(victim, 'root:x:0:0\n');
    // The owner file's name is predictable from the token, which every partial name shows.
    await symlink(victim, path.join(tmp, 'claim-owner-0123456789abcdef-1'));
    const owner = new ClaimOwner(tmp, '0123456789abcdef');
    await owner.claim(path.join(leases, `sha256-${'a'.repeat(64)}`)).catch(() => undefined);
    await owner.dispose();
    expect(await readFile(victim, 'utf8')).toBe('root:x:0:0\n');
  });

  it('a state DB (or its write-ahead log) that is a symlink to a file outside is refused, exit 2; the file is untouched', async () => {
    for (const name of ['state.db', 'state.db-wal']) {
      await fresh();
      await mkdir(sb.state, { recursive: true });
      const victim = path.join(outside, 'empty');
      await writeFile(victim, '');
      await symlink(victim, path.join(sb.state, name));
      await sb.writeManifest([entry(0, 'checkpoints/a.safetensors')]);
      const r = await runCli(['sync'], sb.env());
      expect((await stat(victim)).size).toBe(0);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`${name.replace('.', '\\.')} is a symlink; refusing`));
      expect((await lstat(path.join(sb.state, name))).isSymbolicLink()).toBe(true);
      await sb.cleanup();
    }
  });

  it('a models dir and a store given as symlinks by the operator are used as they are', async () => {
    await fresh();
    const realModels = path.join(sb.dir, 'real-models');
    const realStore = path.join(sb.dir, 'real-store');
    await mkdir(realModels);
    await mkdir(realStore);
    const models = path.join(sb.dir, 'models-link');
    const store = path.join(sb.dir, 'store-link');
    await symlink(realModels, models);
    await symlink(realStore, store);
    await sb.writeManifest([entry(0, 'checkpoints/a.safetensors')]);
    const r = await runCli(['sync', '--models-dir', models, '--store-dir', store], sb.env());
    expect(r.code).toBe(0);
    expect(await exists(path.join(realModels, 'checkpoints/a.safetensors'))).toBe(true);
    expect((await readdir(path.join(realStore, 'blobs', 'sha256'))).length).toBe(1);
  });
});
