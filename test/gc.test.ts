import { chmod, link, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ModelsyncError } from '../src/errors.js';
import { tempPathFor } from '../src/fs/atomic-write.js';
import { collectGarbage, type GcOptions } from '../src/store/gc.js';
import { openStore, type StoreLayout } from '../src/store/layout.js';
import { fileSha256, makeNode, startNode, startSync, writeManifest, type Finished, type NodeDirs } from './support/cli-nodes.js';
import { makeSafetensors, sha256Hex, startHub, type Hub } from './support/hub.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

let root: string;
let store: StoreLayout;

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-gc-'));
  store = await openStore(path.join(root, 'store'));
});

afterEach(async () => {
  await store.close();
  await rm(root, { recursive: true, force: true });
});

/** A committed blob, as commitBlob leaves it: read-only, at its content address. */
async function blob(seed: number): Promise<{ key: string; path: string }> {
  const content = makeSafetensors(1000, seed);
  const hex = sha256Hex(content);
  const p = path.join(store.blobs, 'sha256', hex.slice(0, 2), hex);
  await mkdir(path.dirname(p), { recursive: true });
  await writeFile(p, content);
  await chmod(p, 0o444);
  return { key: `sha256-${hex}`, path: p };
}

async function record(node: string, keys: readonly string[], ageMs = 0): Promise<void> {
  const file = path.join(store.refs, `${node}.json`);
  await writeFile(file, JSON.stringify({ node, host: `host-${node}`, manifest: `/m/${node}.yaml`, updatedAt: Date.now() - ageMs, keys }));
  if (ageMs > 0) await utimes(file, new Date(Date.now() - ageMs), new Date(Date.now() - ageMs));
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function age(p: string, ms: number): Promise<void> {
  const t = new Date(Date.now() - ms);
  await utimes(p, t, t);
}

function gc(extra: Partial<GcOptions> = {}): ReturnType<typeof collectGarbage> {
  return collectGarbage({ store, graceMs: HOUR, refsMaxAgeMs: 30 * DAY, tmpMaxAgeMs: DAY, dryRun: false, ...extra });
}

describe('gc over nodes with different manifests', () => {
  it('collects only what no live record references, after the grace period', async () => {
    const [a, b, c, d] = [await blob(1), await blob(2), await blob(3), await blob(4)];
    await record('nodeA', [a.key, b.key]);
    await record('nodeB', [b.key, c.key]);

    const first = await gc();
    expect(first.removed).toEqual([]);
    expect(first.referenced).toBe(3);
    expect(first.pending.map((p) => p.key)).toEqual([d.key]);
    expect(await exists(path.join(store.root, 'gc', 'unreferenced', d.key))).toBe(true);

    // Still within the grace an hour minus a minute later (the marker is when it started).
    expect((await gc({ now: Date.now() + HOUR - 60_000 })).removed).toEqual([]);
    const later = await gc({ now: Date.now() + HOUR + 60_000 });
    expect(later.removed.map((r) => [r.key, r.stillLinked])).toEqual([[d.key, false]]);
    expect(await exists(d.path)).toBe(false);
    expect(await exists(path.join(store.root, 'gc', 'unreferenced', d.key))).toBe(false);
    for (const x of [a, b, c]) expect(await exists(x.path)).toBe(true);

    // Node B drops b from its manifest: node A still wants it.
    await record('nodeB', [c.key]);
    expect((await gc({ now: Date.now() + 2 * HOUR })).removed).toEqual([]);
    // Node A has not synced for 40 days: its record is dead, and a and b start their grace.
    await record('nodeA', [a.key, b.key], 40 * DAY);
    const dead = await gc();
    expect(dead.records.map((r) => [r.node, r.live])).toEqual([
      ['nodeA', false],
      ['nodeB', true],
    ]);
    expect(dead.pending.map((p) => p.key).sort()).toEqual([a.key, b.key].sort());
    const gone = await gc({ now: Date.now() + 2 * HOUR });
    expect(gone.removed.map((r) => r.key).sort()).toEqual([a.key, b.key].sort());
    expect(await exists(c.path)).toBe(true);
  });

  it('restarts the grace when a blob is referenced again, or committed or linked since the marker', async () => {
    const [a, b] = [await blob(1), await blob(2)];
    await record('nodeA', [b.key]);
    await gc();
    // Marked unreferenced long ago...
    await age(path.join(store.root, 'gc', 'unreferenced', a.key), 3 * HOUR);
    // ...but referenced again meanwhile: the marker goes, and with it the old start of its grace.
    await record('nodeA', [a.key, b.key]);
    await gc();
    expect(await exists(path.join(store.root, 'gc', 'unreferenced', a.key))).toBe(false);
    await record('nodeA', [b.key]);
    const again = await gc();
    expect(again.removed).toEqual([]);
    expect(again.pending.map((p) => p.key)).toEqual([a.key]);

    // An old marker cannot outweigh a fresh link: a node just published it (ctime moved).
    await age(path.join(store.root, 'gc', 'unreferenced', a.key), 3 * HOUR);
    const linked = await gc();
    expect(linked.removed).toEqual([]);
    expect(linked.pending[0]?.remainingMs).toBeGreaterThan(HOUR - 60_000);
  });

  it('a dry run lists what it would remove and touches nothing', async () => {
    const [a, b] = [await blob(1), await blob(2)];
    await record('nodeA', [a.key]);
    const partial = path.join(store.tmp, `${b.key}.dead.part`);
    await writeFile(partial, 'x'.repeat(100));
    await age(partial, 2 * DAY);
    const before = await readdir(store.root, { recursive: true });
    const dry = await gc({ dryRun: true, graceMs: 0 });
    expect(dry.dryRun).toBe(true);
    expect(dry.removed.map((r) => r.key)).toEqual([b.key]);
    expect(dry.temps.map((t) => t.path)).toEqual([path.join('tmp', `${b.key}.dead.part`)]);
    expect(await readdir(store.root, { recursive: true })).toEqual(before);
    expect(await exists(b.path)).toBe(true);
  });

  it('never collects a blob being downloaded; clears stale leases, orphan partials and leftovers', async () => {
    const [a, leased, partialed, old] = [await blob(1), await blob(2), await blob(3), await blob(4)];
    await record('nodeA', [a.key]);
    // A live lease (heartbeat recent) and a recent partial: both mean a download is under way.
    await mkdir(path.join(store.leases, leased.key));
    await writeFile(path.join(store.leases, leased.key, 'owner'), '{"token":"abc"}');
    await writeFile(path.join(store.tmp, `${partialed.key}.t1.part`), '');
    await writeFile(path.join(store.tmp, `${partialed.key}.t1.journal`), '{}');
    // A lease whose holder died two days ago, its partial, and leftovers of a break.
    await mkdir(path.join(store.leases, old.key));
    await writeFile(path.join(store.leases, old.key, 'owner'), '{"token":"dead"}');
    await age(path.join(store.leases, old.key, 'owner'), 2 * DAY);
    await writeFile(path.join(store.tmp, `${old.key}.t2.part`), 'y'.repeat(50));
    await age(path.join(store.tmp, `${old.key}.t2.part`), 2 * DAY);
    await mkdir(path.join(store.leases, `${old.key}.stale-0123abcd`));

    const r = await gc({ graceMs: 0 });
    expect(r.inFlight.map((x) => [x.key, x.why]).sort()).toEqual(
      [
        [leased.key, 'lease'],
        [partialed.key, 'partial'],
      ].sort(),
    );
    expect(await exists(leased.path)).toBe(true);
    expect(await exists(partialed.path)).toBe(true);
    // The dead download protects nothing any more: lease, partial and blob all go.
    expect(r.leases.map((l) => l.path)).toEqual([path.join('leases', old.key)]);
    expect(r.temps.map((t) => t.path)).toEqual([path.join('tmp', `${old.key}.t2.part`)]);
    expect(r.removed.map((x) => x.key)).toEqual([old.key]);
    expect((await readdir(store.leases)).sort()).toEqual([leased.key]);
    expect((await readdir(store.tmp)).sort()).toEqual([`${partialed.key}.t1.journal`, `${partialed.key}.t1.part`]);
  });

  it('clears the temp files killed atomic writers left (refs, layout.json, journals; old naming too) once old, never a record or a young temp', async () => {
    const a = await blob(1);
    await record('nodeA', [a.key]);
    const layout = path.join(store.root, 'layout.json');
    const journal = path.join(store.tmp, `${a.key}.t1.journal`);
    const old = [tempPathFor(path.join(store.refs, 'nodeB.json')), tempPathFor(layout), tempPathFor(journal), `${layout}.123.abc`, path.join(store.refs, 'nodeC.json.123.abc')];
    const young = [tempPathFor(path.join(store.refs, 'nodeD.json')), tempPathFor(layout)];
    for (const p of [...old, ...young]) await writeFile(p, '{"half": ');
    for (const p of old) await age(p, 2 * DAY);
    const r = await gc();
    expect(r.temps.map((t) => t.path).sort()).toEqual(old.map((p) => path.relative(store.root, p)).sort());
    for (const p of old) expect(await exists(p)).toBe(false);
    for (const p of [...young, layout, path.join(store.refs, 'nodeA.json'), a.path]) expect(await exists(p)).toBe(true);
  });

  it('collects nothing when no node has a live record, and stops at an unreadable one', async () => {
    const a = await blob(1);
    const none = await gc({ graceMs: 0 });
    expect(none.refused).toMatch(/no live reference record/);
    expect(none.removed).toEqual([]);
    expect(await exists(a.path)).toBe(true);

    await writeFile(path.join(store.refs, 'broken.json'), '{"keys": [tru');
    await expect(gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'E_CORRUPT' });
    await expect(gc({ graceMs: 0 })).rejects.toBeInstanceOf(ModelsyncError);
    expect(await exists(a.path)).toBe(true);
  });
});

describe('modelsync gc (CLI) after real syncs of two manifests', () => {
  let hub: Hub;
  const files = [1, 2, 3].map((i) => ({ path: `m${i}.safetensors`, content: makeSafetensors(20_000, 50 + i) }));
  const sha = files.map((f) => sha256Hex(f.content));

  beforeAll(async () => {
    hub = await startHub();
    hub.addRepo({ id: 'acme/gc', files });
  });

  afterAll(async () => {
    await hub.close();
  });

  const entry = (i: number): { source: string; dest: string } => ({ source: `hf://acme/gc/m${i}.safetensors`, dest: `loras/m${i}.safetensors` });

  async function syncNode(node: NodeDirs, models: number[]): Promise<void> {
    const manifest = await writeManifest(path.join(root, `${node.name}.json`), models.map(entry));
    const r = await startSync(node, { manifest, storeDir: store.root, hub: hub.endpoint }).done;
    if (r.code !== 0) throw new Error(`sync failed: ${r.stdout} ${r.stderr}`);
  }

  function cli(node: NodeDirs, args: readonly string[]): Promise<Finished> {
    return startNode(node, ['gc', '--models-dir', node.modelsDir, '--store-dir', store.root, ...args], { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: node.stateDir, MODELSYNC_STATE_DIR: node.stateDir }).done;
  }

  it('keeps what either node needs, lists on --dry-run, and removes a blob both dropped', async () => {
    const a = await makeNode(root, 'a');
    const b = await makeNode(root, 'b');
    await syncNode(a, [1, 2]);
    await syncNode(b, [2, 3]);
    await syncNode(b, [3]);
    const keep = await cli(a, ['--grace-period', '0']);
    expect(keep.code).toBe(0);
    expect(keep.stdout).toMatch(/removed 0 blob\(s\)/);
    expect(keep.stdout).toMatch(/3 referenced by 2 live record\(s\)/);

    // A hard link of the user's to a's m2: a's sync below unpublishes its own dest (the manifest
    // dropped it), and the blob is still hard-linked, by the user's name.
    const usersLink = path.join(root, 'kept-by-user.safetensors');
    await link(path.join(a.modelsDir, 'loras/m2.safetensors'), usersLink);
    await syncNode(a, [1]);
    expect(await exists(path.join(a.modelsDir, 'loras/m2.safetensors'))).toBe(false);
    const graced = await cli(a, ['--grace-period', '3600']);
    expect(graced.stdout).toContain(`keep         sha256-${sha[1]}`);
    expect(graced.stdout).toMatch(/in its grace period for (59m|60m)/);

    const dry = await cli(b, ['--dry-run', '--grace-period', '0']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`would remove sha256-${sha[1]}`);
    expect(dry.stdout).toContain('still hard-linked');
    const blob2 = path.join(store.blobs, 'sha256', (sha[1] ?? '').slice(0, 2), sha[1] ?? '');
    expect(await exists(blob2)).toBe(true);

    const real = await cli(b, ['--grace-period', '0', '--json']);
    expect(real.code).toBe(0);
    const report = JSON.parse(real.stdout) as { removed: { key: string }[] };
    expect(report.removed.map((r) => r.key)).toEqual([`sha256-${sha[1]}`]);
    expect(await exists(blob2)).toBe(false);
    // Other hard links are their owners' business: they still hold the right bytes.
    expect(await fileSha256(usersLink)).toBe(sha[1]);
    for (const i of [0, 2]) expect(await exists(path.join(store.blobs, 'sha256', (sha[i] ?? '').slice(0, 2), sha[i] ?? ''))).toBe(true);
  });

  it('says so and exits 0 when there is no store yet', async () => {
    const n = await makeNode(root, 'fresh');
    const r = await startNode(n, ['gc', '--models-dir', n.modelsDir, '--store-dir', path.join(root, 'nowhere')], { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: n.stateDir, MODELSYNC_STATE_DIR: n.stateDir }).done;
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/no store at/);
    expect(await exists(path.join(root, 'nowhere'))).toBe(false);
  });
});
