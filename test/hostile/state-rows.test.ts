/**
 * Rows of the state DB read back as paths (issue 13, classes 2 and 5): the state DB is only an
 * index, and a tampered one (edited by hand, written by an older or hostile tool) must not turn
 * into a removal outside what modelsync placed. The `published` and `on_demand` tables' dests and
 * keys are validated where they are read, and unpublish checks a dest again where it becomes a
 * path.
 */
import { link, stat } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { OnDemandTable } from '../../src/state/on-demand-table.js';
import { PublishedTable } from '../../src/state/published-table.js';
import { ownerOf, unpublish } from '../../src/store/unpublish.js';
import { runSync } from '../../src/sync/engine.js';
import { openContext } from '../../src/sync/context.js';
import { sandbox, type Sandbox } from '../support/cli.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { addModel, exists, fileSha256, sha256, type TestModel } from '../support/models.js';
import { onDemandRig, type Rig } from '../support/on-demand-rig.js';

const { hub } = await useHubSandbox();
let rig: Rig | undefined;
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  await rig?.close();
  rig = undefined;
  for (const c of cleanups.splice(0)) await c();
});

const KEEP = 'checkpoints/keep.safetensors';
const inStore = (m: TestModel): string => `.modelsync-store/blobs/sha256/${m.sha256.slice(0, 2)}/${m.sha256}`;
const blobOf = (sb: Sandbox, m: TestModel): string => path.join(sb.models, inStore(m));

/** Stamp `file` as verified under `p` in the state DB, as this modelsync would after hashing it. */
async function forgeVerified(db: Database.Database, p: string, file: string, m: TestModel): Promise<void> {
  const st = await stat(file, { bigint: true });
  db.prepare('INSERT OR REPLACE INTO verified (path, dev, ino, size, mtime_ns, ctime_ns, algo, hex, verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
    p,
    String(st.dev),
    String(st.ino),
    Number(st.size),
    String(st.mtimeNs),
    String(st.ctimeNs),
    'sha256',
    m.sha256,
    Date.now(),
  );
}

describe('on-demand rows read back from the state DB', () => {
  it('a row whose dest reaches into the store is no row: never evicted, so the blob a manifest publishes stays', async () => {
    const keep = addModel(hub, 100_000);
    const [a, b] = [addModel(hub, 100_000), addModel(hub, 100_000)];
    const yaml = `version: 1\nmodels: [{source: "${keep.uri}", dest: "${KEEP}"}]\non_demand:\n  allow: ["hf://*"]\n  max_bytes: 250000\n`;
    rig = await onDemandRig(hub.endpoint, yaml);
    expect((await runSync(rig.ctx, rig.manifest)).ok).toBe(true);
    expect((await rig.ensure([{ source: a.uri, dest: 'loras/a.safetensors' }])).ok).toBe(true);
    // A tampered DB: the oldest "ready" row of the layer names the manifest's blob in the store,
    // with a verified stamp that says it is modelsync's file. Evicting it would unlink the blob.
    const db = new Database(path.join(rig.sb.state, 'state.db'));
    const other = (n: number): string => sha256(Buffer.from(`a key nobody fetched ${n}`));
    const ins = db.prepare('INSERT INTO on_demand (models_dir, dest, source, algo, hex, size, state, last_used, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
    ins.run(rig.sb.models, inStore(keep), 'hf://x/y@main/z.safetensors', 'sha256', other(1), 100_000, 'ready', 0, 0);
    ins.run(rig.sb.models, '../outside.safetensors', 'hf://x/y@main/w.safetensors', 'sha256', other(2), 100_000, 'ready', 1, 1);
    // Rows this modelsync never writes: a key that is a path, a state it does not know, a size that is not one.
    ins.run(rig.sb.models, 'loras/k.safetensors', 'hf://x/y@main/k.safetensors', 'sha256', '../../../../etc/passwd', 1, 'ready', 2, 2);
    ins.run(rig.sb.models, 'loras/s.safetensors', 'hf://x/y@main/s.safetensors', 'sha256', other(3), 1, 'gone', 3, 3);
    ins.run(rig.sb.models, 'loras/n.safetensors', 'hf://x/y@main/n.safetensors', 'sha256', other(4), -5, 'ready', 4, 4);
    await forgeVerified(db, path.join(rig.sb.models, inStore(keep)), blobOf(rig.sb, keep), keep);
    db.close();

    expect(rig.service.layer.table.rows().map((r) => r.dest)).toEqual(['loras/a.safetensors']);
    for (const d of [inStore(keep), '../outside.safetensors', 'loras/k.safetensors', 'loras/s.safetensors', 'loras/n.safetensors']) {
      expect(rig.service.layer.table.row(d), d).toBeUndefined();
    }
    // b fits beside a once the forged rows count for nothing: nothing is evicted.
    expect((await rig.ensure([{ source: b.uri, dest: 'loras/b.safetensors' }])).ok).toBe(true);
    expect(rig.service.layer.evictions).toBe(0);
    expect(await fileSha256(blobOf(rig.sb, keep))).toBe(keep.sha256);
    expect(await fileSha256(path.join(rig.sb.models, KEEP))).toBe(keep.sha256);
    expect(await fileSha256(path.join(rig.sb.models, 'loras/a.safetensors'))).toBe(a.sha256);
    expect(await fileSha256(path.join(rig.sb.models, 'loras/b.safetensors'))).toBe(b.sha256);
    expect((await rig.refs()).keys.filter((k) => [1, 2, 3, 4].some((n) => k === `sha256-${other(n)}`))).toEqual([]);
  });
});

describe('published rows read back from the state DB', () => {
  it('a row whose dest is not FOLDER/FILE of plain names is no row', async () => {
    const sb = await sandbox(hub.endpoint);
    cleanups.push(() => sb.cleanup());
    const ctx = await openContext(loadConfig({}, sb.env(), false), silentLogger());
    cleanups.unshift(() => Promise.resolve(ctx.close()));
    const table = new PublishedTable(ctx.db, sb.models);
    const key = { algo: 'sha256', hex: sha256(Buffer.from('x')) } as const;
    for (const dest of ['.modelsync-store/blobs/sha256/ab/cd', '../victim.safetensors', 'loras/../../victim', 'loras/.hidden', 'x', 'loras/a\\b']) table.put(sb.manifest, dest, 'hf://x/y@main/z', key, 1);
    table.put(sb.manifest, 'loras/ok.safetensors', 'hf://x/y@main/z', key, 1);
    expect(table.rowsOf(sb.manifest).map((r) => r.dest)).toEqual(['loras/ok.safetensors']);
    expect(table.row('.modelsync-store/blobs/sha256/ab/cd', sb.manifest)).toBeUndefined();
    expect(table.row('loras/ok.safetensors', sb.manifest)).toMatchObject({ dest: 'loras/ok.safetensors' });
    // And the on-demand table the same way, through its own put.
    const layer = new OnDemandTable(ctx.db, sb.models);
    layer.put({ dest: '.modelsync-store/x/y', source: 's', key, size: 1, state: 'ready', lastUsed: 1, createdAt: 1 });
    expect(layer.rows()).toEqual([]);
  });
});

describe('unpublish and ownerOf', () => {
  it('refuse a dest that is not FOLDER/FILE of plain names, even for the blob\'s own inode: a store blob is never unlinked', async () => {
    const keep = addModel(hub, 50_000);
    const sb = await sandbox(hub.endpoint);
    cleanups.push(() => sb.cleanup());
    const ctx = await openContext(loadConfig({}, sb.env(), false), silentLogger());
    cleanups.unshift(() => Promise.resolve(ctx.close()));
    const manifest = (await import('../../src/manifest/load.js')).parseManifest(`version: 1\nmodels: [{source: "${keep.uri}", dest: "${KEEP}"}]\n`, sb.manifest);
    expect((await runSync(ctx, manifest)).ok).toBe(true);
    const blob = blobOf(sb, keep);
    // A hard link of the blob beside the models dir: "ours" by inode too.
    const victim = path.join(sb.dir, 'victim.safetensors');
    await link(blob, victim);
    for (const dest of [inStore(keep), '../victim.safetensors', 'checkpoints/../../victim.safetensors']) {
      await expect(ownerOf(sb.models, dest, blob, undefined), dest).rejects.toMatchObject({ code: 'E_PATH_UNSAFE' });
      await expect(unpublish(sb.models, dest, blob, undefined), dest).rejects.toMatchObject({ code: 'E_PATH_UNSAFE' });
    }
    expect(await fileSha256(blob)).toBe(keep.sha256);
    expect(await exists(victim)).toBe(true);
    // The manifest's own dest is still judged and removed as before.
    expect(await ownerOf(sb.models, KEEP, blob, undefined)).toEqual({ owner: 'ours' });
    expect(await unpublish(sb.models, KEEP, blob, undefined)).toBe('removed');
    expect(await exists(blob)).toBe(true);
  });
});
