/**
 * The models dir is the desired state (issue 18, section 3): what modelsync published for an
 * entry the manifest no longer names is unpublished by the next sync, and only that. A user's own
 * file stays and is reported; plan and status say what a sync would do; --keep-removed turns it
 * off; a manifest that does not load unpublishes nothing; manifests and installs sharing one
 * models dir each keep what they name; the on-demand layer's entries are not the manifest's.
 */
import { link, readFile, rename, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from './support/cli.js';
import { freePort, killAll, startRun, STUB, waitFor } from './support/daemon-harness.js';
import { rawRequest } from './support/http-get.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, exists, fileSha256, type TestModel } from './support/models.js';

afterEach(killAll);
const { hub, sandbox } = await useHubSandbox();

const A = 'checkpoints/a.safetensors';
const B = 'loras/b.safetensors';

interface Removal {
  dest: string;
  source: string;
  state: string;
  reason?: string;
}
interface Report {
  ok: boolean;
  entries: { dest: string; state: string }[];
  removed?: Removal[];
}

async function syncJson(sb: Sandbox, extra: readonly string[] = [], env: Record<string, string> = {}): Promise<{ code: number | null; report: Report; stderr: string }> {
  const r = await runCli(['sync', '--json', ...extra], sb.env(env));
  return { code: r.code, report: JSON.parse(r.stdout) as Report, stderr: r.stderr };
}

/** Two entries synced: a checkpoint and a LoRA. */
async function twoSynced(): Promise<{ sb: Sandbox; a: TestModel; b: TestModel }> {
  const sb = await sandbox(hub.endpoint);
  const a = addModel(hub, 40_000);
  const b = addModel(hub, 30_000);
  await sb.writeManifest([
    { source: a.uri, dest: A },
    { source: b.uri, dest: B },
  ]);
  expect((await runCli(['sync'], sb.env())).code).toBe(0);
  return { sb, a, b };
}

const blobOf = (sb: Sandbox, m: TestModel): string => path.join(sb.models, '.modelsync-store/blobs/sha256', m.sha256.slice(0, 2), m.sha256);

describe('entries removed from the manifest', () => {
  it('are unpublished by the next sync, once; the rest stays, the blob waits in the store for gc', async () => {
    const { sb, a, b } = await twoSynced();
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    hub.resetStats();
    const r = await syncJson(sb);
    expect(r.code).toBe(0);
    expect(r.report.removed).toEqual([{ dest: B, source: b.uri, state: 'unpublished', key: { algo: 'sha256', hex: b.sha256 }, size: b.content.length }]);
    expect(await exists(path.join(sb.models, B))).toBe(false);
    expect(await fileSha256(path.join(sb.models, A))).toBe(a.sha256);
    // Nothing fetched to decide it, and the blob is gc's, not the sync's.
    expect(hub.stats.requests).toEqual([]);
    expect(await exists(blobOf(sb, b))).toBe(true);
    const text = await runCli(['sync'], sb.env());
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^1 entries: 1 present, 0 published, 0 failed; fetched/m);
    expect(text.stdout).not.toMatch(/unpublished/);
    // No longer referenced: gc collects it once its grace period is over.
    const gc = await runCli(['gc', '--grace-period', '0'], sb.env());
    expect(gc.code).toBe(0);
    expect(await exists(blobOf(sb, b))).toBe(false);
    expect(await exists(blobOf(sb, a))).toBe(true);
  });

  it('the text report says what was unpublished', async () => {
    const { sb, a } = await twoSynced();
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^unpublished loras\/b\.safetensors \(.*\): no longer in the manifest$/m);
    expect(r.stdout).toMatch(/1 entries: 1 present, 0 published, 0 failed; 1 unpublished; fetched/);
  });

  it('a dest that moved is published at its new place, and the old one unpublished', async () => {
    const { sb, a, b } = await twoSynced();
    await sb.writeManifest([
      { source: a.uri, dest: A },
      { source: b.uri, dest: 'loras/renamed.safetensors' },
    ]);
    const r = await syncJson(sb);
    expect(r.code).toBe(0);
    expect(r.report.removed?.map((x) => [x.dest, x.state])).toEqual([[B, 'unpublished']]);
    expect(await exists(path.join(sb.models, B))).toBe(false);
    expect(await fileSha256(path.join(sb.models, 'loras/renamed.safetensors'))).toBe(b.sha256);
  });

  it("a user's own file at the dest is left alone and reported, once", async () => {
    const { sb, a } = await twoSynced();
    // Replaced by the user: another inode, their bytes.
    await unlink(path.join(sb.models, B));
    await writeFile(path.join(sb.models, B), 'my own lora');
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    const r = await syncJson(sb);
    expect(r.code).toBe(0);
    expect(r.report.removed?.map((x) => [x.dest, x.state])).toEqual([[B, 'user-file']]);
    expect(r.stderr).toMatch(/left in place: no longer in the manifest, but the file there is not the one modelsync published/);
    expect(await readFile(path.join(sb.models, B), 'utf8')).toBe('my own lora');
    // Said once: from then on it is a file of the user's like any other.
    const again = await syncJson(sb);
    expect(again.report.removed).toEqual([]);
    expect(await readFile(path.join(sb.models, B), 'utf8')).toBe('my own lora');
  });

  it('a dest the user made a symlink (to a file of theirs) is theirs', async () => {
    const { sb, b } = await twoSynced();
    const outside = path.join(sb.dir, 'elsewhere.safetensors');
    await writeFile(outside, 'not a model');
    await unlink(path.join(sb.models, B));
    await symlink(outside, path.join(sb.models, B));
    await sb.writeManifest([{ source: b.uri, dest: B.replace('b.', 'b2.') }]);
    const moved = await syncJson(sb);
    expect(moved.code).toBe(0);
    expect(moved.report.removed?.map((x) => [x.dest, x.state])).toEqual([
      [A, 'unpublished'],
      [B, 'user-file'],
    ]);
    expect(await readFile(outside, 'utf8')).toBe('not a model');
    expect(await readFile(path.join(sb.models, B), 'utf8')).toBe('not a model');
    expect(await exists(path.join(sb.models, A))).toBe(false);
  });

  it('plan and status say what the next sync would unpublish or leave, and change nothing', async () => {
    const { sb, a, b } = await twoSynced();
    const c = addModel(hub, 20_000);
    await sb.writeManifest([
      { source: a.uri, dest: A },
      { source: c.uri, dest: 'loras/c.safetensors' },
    ]);
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    const plan = await runCli(['plan'], sb.env());
    expect(plan.code).toBe(0);
    expect(plan.stdout).toMatch(/^unpublish +loras\/b\.safetensors \(.*\): no longer in the manifest, removed by the sync$/m);
    const planJson = JSON.parse((await runCli(['plan', '--json'], sb.env())).stdout) as { removed: Removal[] };
    expect(planJson.removed.map((x) => [x.dest, x.state, x.source])).toEqual([[B, 'unpublished', b.uri]]);
    const status = await runCli(['status'], sb.env());
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^unpublish +loras\/b\.safetensors \(.*\): no longer in the manifest, removed by the next sync$/m);
    expect(status.stdout).toMatch(/1\/1 present and verified; 1 no longer in the manifest/);
    const statusJson = JSON.parse((await runCli(['status', '--json'], sb.env())).stdout) as { removed: Removal[] };
    expect(statusJson.removed.map((x) => [x.dest, x.state])).toEqual([[B, 'unpublished']]);
    expect(await fileSha256(path.join(sb.models, B))).toBe(b.sha256);
    // A file of the user's there: plan says it stays.
    await unlink(path.join(sb.models, B));
    await writeFile(path.join(sb.models, B), 'mine');
    const left = await runCli(['plan'], sb.env());
    expect(left.stdout).toMatch(/^left +loras\/b\.safetensors: no longer in the manifest, but the file there is not the one modelsync published \(the next sync leaves it alone\)$/m);
    expect(await readFile(path.join(sb.models, B), 'utf8')).toBe('mine');
  });

  it('--keep-removed (or MODELSYNC_KEEP_REMOVED) keeps them published and referenced; a sync without it unpublishes', async () => {
    const { sb, a, b } = await twoSynced();
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    const kept = await syncJson(sb, ['--keep-removed']);
    expect(kept.code).toBe(0);
    expect(kept.report.removed?.map((x) => [x.dest, x.state, x.reason])).toEqual([[B, 'kept', '--keep-removed']]);
    expect(await fileSha256(path.join(sb.models, B))).toBe(b.sha256);
    // Still referenced: gc leaves its blob.
    expect((await runCli(['gc', '--grace-period', '0'], sb.env())).code).toBe(0);
    expect(await exists(blobOf(sb, b))).toBe(true);
    // The warm path answers the same.
    const warm = await syncJson(sb, [], { MODELSYNC_KEEP_REMOVED: '1' });
    expect(warm.report.removed?.map((x) => [x.dest, x.state])).toEqual([[B, 'kept']]);
    const plan = await runCli(['plan', '--keep-removed'], sb.env());
    expect(plan.stdout).toMatch(/^kept +loras\/b\.safetensors \(.*\): no longer in the manifest, kept: --keep-removed$/m);
    const off = await syncJson(sb);
    expect(off.report.removed?.map((x) => [x.dest, x.state])).toEqual([[B, 'unpublished']]);
    expect(await exists(path.join(sb.models, B))).toBe(false);
  });

  it('a manifest that does not load unpublishes nothing', async () => {
    const { sb, a, b } = await twoSynced();
    // The remaining entry is fine; another is not: the manifest is refused as a whole.
    await sb.writeManifest([
      { source: a.uri, dest: A },
      { source: 'hf://x/y/z.safetensors', dest: '../escape.safetensors' },
    ]);
    const bad = await runCli(['sync'], sb.env());
    expect(bad.code).toBe(2);
    await writeFile(sb.manifest, '{"version": 1, "models": [');
    expect((await runCli(['sync'], sb.env())).code).toBe(2);
    expect((await runCli(['plan'], sb.env())).code).toBe(2);
    expect(await fileSha256(path.join(sb.models, B))).toBe(b.sha256);
    expect(await fileSha256(path.join(sb.models, A))).toBe(a.sha256);
  });

  it('a state DB row that names a dest outside the models dir is never acted on', async () => {
    const { sb, b } = await twoSynced();
    // A tampered state DB: a row for "../victim" with a verified stamp that matches the victim,
    // a hard link of the blob outside the models dir.
    const victim = path.join(sb.dir, 'victim.safetensors');
    await link(blobOf(sb, b), victim);
    const st = await stat(victim, { bigint: true });
    const db = new Database(path.join(sb.state, 'state.db'));
    db.prepare('INSERT INTO published VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(sb.models, sb.manifest, '../victim.safetensors', b.uri, 'sha256', b.sha256, b.content.length, Date.now());
    db.prepare('INSERT OR REPLACE INTO verified (path, dev, ino, size, mtime_ns, ctime_ns, algo, hex, verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
      victim,
      String(st.dev),
      String(st.ino),
      Number(st.size),
      String(st.mtimeNs),
      String(st.ctimeNs),
      'sha256',
      b.sha256,
      Date.now(),
    );
    db.close();
    const r = await syncJson(sb);
    expect(r.code).toBe(0);
    expect(await exists(victim)).toBe(true);
    expect(r.report.removed ?? []).toEqual([]);
    expect(await exists(path.join(sb.models, A))).toBe(true);
  });

  it('a folder on the way replaced by a symlink: nothing through it is removed', async () => {
    const { sb, a, b } = await twoSynced();
    // loras/ moved away and replaced by a link to it: the file is the verified inode, but the
    // path to it goes through a symlink.
    const away = path.join(sb.dir, 'loras-away');
    await rename(path.join(sb.models, 'loras'), away);
    await symlink(away, path.join(sb.models, 'loras'));
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    const r = await syncJson(sb);
    expect(r.code).toBe(0);
    expect(r.report.removed?.map((x) => [x.dest, x.state])).toEqual([[B, 'user-file']]);
    expect(await fileSha256(path.join(away, 'b.safetensors'))).toBe(b.sha256);
  });
});

describe('a models dir shared', () => {
  it('by two manifests: a dest one drops and the other names stays; each unpublishes only its own', async () => {
    const { sb, a, b } = await twoSynced();
    const c = addModel(hub, 25_000);
    const other = path.join(sb.dir, 'other.json');
    const write = (file: string, models: unknown[]): Promise<void> => writeFile(file, JSON.stringify({ version: 1, models }));
    await write(other, [
      { source: b.uri, dest: B },
      { source: c.uri, dest: 'loras/c.safetensors' },
    ]);
    expect((await runCli(['sync', '--manifest', other], sb.env())).code).toBe(0);
    // The first manifest drops B, which the other still names: it stays.
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    const first = await syncJson(sb);
    expect(first.report.removed?.map((x) => [x.dest, x.state, x.reason])).toEqual([[B, 'kept', `manifest ${other} names it too`]]);
    expect(await fileSha256(path.join(sb.models, B))).toBe(b.sha256);
    // The other manifest's sync does not see A (it never named it) as removed.
    const second = JSON.parse((await runCli(['sync', '--json', '--manifest', other], sb.env())).stdout) as Report;
    expect(second.removed).toEqual([]);
    expect(await exists(path.join(sb.models, A))).toBe(true);
    // Kept by the other manifest's record: gc leaves the blob.
    expect((await runCli(['gc', '--grace-period', '0'], sb.env())).code).toBe(0);
    expect(await exists(blobOf(sb, b))).toBe(true);
    // Once the other drops it too, it goes.
    await write(other, [{ source: c.uri, dest: 'loras/c.safetensors' }]);
    const last = JSON.parse((await runCli(['sync', '--json', '--manifest', other], sb.env())).stdout) as Report;
    expect(last.removed?.map((x) => [x.dest, x.state])).toEqual([[B, 'unpublished']]);
    expect(await exists(path.join(sb.models, B))).toBe(false);
    expect(await exists(path.join(sb.models, A))).toBe(true);
  });

  it('by two installs (nodes): a dest stays while the other install still references its content', async () => {
    const { sb, a, b } = await twoSynced();
    // A second node: its own state dir, the same models dir and store.
    const node2 = { MODELSYNC_STATE_DIR: path.join(sb.dir, 'state-node2') };
    expect((await runCli(['sync'], sb.env(node2))).code).toBe(0);
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    // Node 1 syncs the edit first: node 2's record still names B's content.
    const first = await syncJson(sb);
    expect(first.report.removed?.map((x) => [x.dest, x.state])).toEqual([[B, 'kept']]);
    expect(first.report.removed?.[0]?.reason).toMatch(/^another install using this models dir \(.*\) references its content$/);
    expect(await fileSha256(path.join(sb.models, B))).toBe(b.sha256);
    // Node 2 syncs it: nobody else references it now, it goes.
    const second = await syncJson(sb, [], node2);
    expect(second.report.removed?.map((x) => [x.dest, x.state])).toEqual([[B, 'unpublished']]);
    expect(await exists(path.join(sb.models, B))).toBe(false);
  });
});

describe('a state DB from before the published table', () => {
  it('carries its rows over: no network, and removals work after', async () => {
    const { sb, a, b } = await twoSynced();
    // What the previous schema held: `entries` by dest alone, user_version 1.
    const db = new Database(path.join(sb.state, 'state.db'));
    db.exec('CREATE TABLE entries (dest TEXT PRIMARY KEY, source TEXT NOT NULL, algo TEXT NOT NULL, hex TEXT NOT NULL, size INTEGER NOT NULL, state TEXT NOT NULL, updated_at INTEGER NOT NULL)');
    db.exec("INSERT INTO entries SELECT dest, source, algo, hex, size, 'published', updated_at FROM published");
    db.exec('DROP TABLE published');
    db.pragma('user_version = 1');
    db.close();
    hub.resetStats();
    const up = await syncJson(sb);
    expect(up.code).toBe(0);
    expect(up.report.entries.map((e) => e.state)).toEqual(['present', 'present']);
    expect(hub.stats.requests).toEqual([]);
    await sb.writeManifest([{ source: a.uri, dest: A }]);
    const r = await syncJson(sb);
    expect(r.report.removed?.map((x) => [x.dest, x.state, x.source])).toEqual([[B, 'unpublished', b.uri]]);
  });
});

describe('`modelsync run`', () => {
  it('a manifest edit that drops an entry unpublishes it (ComfyUI stops listing it), readiness stays; an on-demand entry is not the manifest\'s', async () => {
    const sb = await sandbox(hub.endpoint);
    const a = addModel(hub, 40_000);
    const b = addModel(hub, 30_000);
    const wanted = addModel(hub, 20_000);
    const policy = { on_demand: { allow: [`hf://${wanted.repo}/*`, `hf://${wanted.repo}@*`], max_bytes: '1G' } };
    await sb.writeManifest(
      [
        { source: a.uri, dest: A },
        { source: b.uri, dest: B },
      ],
      policy,
    );
    const comfyPort = await freePort();
    const d = startRun(['--', process.execPath, STUB, '--listen', '127.0.0.1', '--port', String(comfyPort), '--stub-models-dir', sb.models], sb.env(), await freePort());
    const lists = async (name: string): Promise<boolean> => {
      const r = await rawRequest(`http://127.0.0.1:${comfyPort}/object_info`).catch(() => undefined);
      return r !== undefined && r.body.toString().includes(name);
    };
    await waitFor('ready', async () => (await d.get('/readyz'))?.status === 200);
    expect(await lists('b.safetensors')).toBe(true);
    const text = JSON.stringify({ models: [{ name: 'wanted.safetensors', url: `${hub.endpoint}/${wanted.repo}/resolve/main/${wanted.path}`, directory: 'loras' }] });
    const got = await rawRequest(`${d.controlUrl}/models?wait=60`, { method: 'POST', body: text, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) }, timeoutMs: 60_000 });
    expect(got.status).toBe(200);
    expect(await exists(path.join(sb.models, 'loras/wanted.safetensors'))).toBe(true);

    await sb.writeManifest([{ source: a.uri, dest: A }], policy);
    await waitFor('B unpublished', async () => !(await exists(path.join(sb.models, B))));
    await waitFor('ComfyUI to stop listing it', async () => !(await lists('b.safetensors')));
    expect((await d.get('/readyz'))?.status).toBe(200);
    const lastSync = async (): Promise<{ removed: { dest: string; state: string }[] } | undefined> => ((await d.status()) as unknown as { sync: { last?: { removed: { dest: string; state: string }[] } } }).sync.last;
    await waitFor('the sync to be reported', async () => (await lastSync())?.removed.length === 1);
    expect((await lastSync())?.removed).toEqual([{ dest: B, state: 'unpublished' }]);
    const shown = await runCli(['status', '--control', d.controlUrl.replace('http://', '')], sb.env());
    expect(shown.stdout).toMatch(/^unpublished +loras\/b\.safetensors: no longer in the manifest$/m);
    // The on-demand layer's model was never the manifest's to unpublish.
    expect(await fileSha256(path.join(sb.models, 'loras/wanted.safetensors'))).toBe(wanted.sha256);
    expect(await fileSha256(path.join(sb.models, A))).toBe(a.sha256);

    // A manifest edit that does not load: the daemon keeps the last good one, nothing goes.
    await writeFile(sb.manifest, '{"version": 1, "models": [');
    const r = await runCli(['resync', '--control', d.controlUrl.replace('http://', '')], sb.env());
    expect(r.code).toBe(2);
    expect(await fileSha256(path.join(sb.models, A))).toBe(a.sha256);
    expect(await exists(path.join(sb.models, 'loras/wanted.safetensors'))).toBe(true);
    // resync cannot change the daemon's own setting: refused, not silently ignored.
    const keep = await runCli(['resync', '--keep-removed', '--control', d.controlUrl.replace('http://', '')], sb.env());
    expect(keep.code).toBe(2);
    expect(keep.stderr).toMatch(/--keep-removed applies to an in-process resync only/);
    d.signal('SIGTERM');
    await d.exited;
  });
});
