/**
 * Small blobs (at most SMALL_BLOB_BYTES) are fetched under a claim (a lease without heartbeat),
 * skipped on a first pass while a peer holds it, committed with a link that never replaces, and
 * their folder fsyncs and state DB rows are batched per sync (SyncBatch).
 * Real `modelsync sync` processes on one store against the Hub stand-in, and commitBlob itself.
 */
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { commitBlob, type BlobPlace } from '../src/store/blobs.js';
import { SMALL_BLOB_BYTES } from '../src/store/claim.js';
import { checkFinalPaths } from './support/final-paths.js';
import { fileSha256, listFiles, makeNode, startSync, waitFor, writeManifest, type Finished, type RunningNode } from './support/cli-nodes.js';
import { makeSafetensors, sha256Hex, startHub, type Hub } from './support/hub.js';

let hub: Hub;
let root: string | undefined;
let running: RunningNode[] = [];
let seed = 9000;

beforeAll(async () => {
  hub = await startHub();
});

afterAll(async () => {
  await hub.close();
});

afterEach(async () => {
  for (const r of running) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await Promise.allSettled(running.map((r) => r.done));
  running = [];
  if (root !== undefined) await rm(root, { recursive: true, force: true });
  root = undefined;
});

function expectOk(f: Finished): void {
  if (f.code !== 0) throw new Error(`exit ${f.code ?? f.signal}\nstdout: ${f.stdout}\nstderr: ${f.stderr}`);
}

interface SmallFile {
  readonly dest: string;
  readonly sha: string;
  readonly size: number;
}

/** A repo of `count` small safetensors files, a manifest for them, and an empty store. */
async function smallRepo(label: string, count: number, bytes: number): Promise<{ manifest: string; store: string; files: SmallFile[] }> {
  root = await mkdtemp(path.join(os.tmpdir(), `modelsync-small-${label}-`));
  const files = Array.from({ length: count }, (_, i) => ({ path: `parts/${String(i).padStart(4, '0')}.safetensors`, content: makeSafetensors(bytes, seed++) }));
  const repo = `acme/small-${label}-${seed}`;
  hub.addRepo({ id: repo, files });
  const manifest = await writeManifest(
    path.join(root, 'manifest.json'),
    files.map((f) => ({ source: `hf://${repo}/${f.path}`, dest: `loras/${path.basename(f.path)}` })),
  );
  return { manifest, store: path.join(root, 'store'), files: files.map((f) => ({ dest: `loras/${path.basename(f.path)}`, sha: sha256Hex(f.content), size: f.content.length })) };
}

describe('small blobs: claims, one commit, batched durability', () => {
  it('four syncs of many small blobs at once share the work under claims: each blob fetched about once, committed once, verified, published everywhere', async () => {
    const { manifest, store, files } = await smallRepo('together', 40, 100_000);
    expect(100_000).toBeLessThan(SMALL_BLOB_BYTES);
    // Paced so that the nodes overlap on every file.
    for (const f of files) hub.setFaults(f.sha, { bytesPerSecond: 400_000 });
    const nodes = await Promise.all(['a', 'b', 'c', 'd'].map((n) => makeNode(root as string, n)));
    const runs = nodes.map((n) => startSync(n, { manifest, storeDir: store, hub: hub.endpoint, args: ['--json', '--connections', '4'] }));
    running.push(...runs);
    const results = await Promise.all(runs.map((r) => r.done));
    results.forEach(expectOk);
    const total = files.reduce((a, f) => a + (hub.stats.bytesServed.get(f.sha) ?? 0), 0);
    const size = files.reduce((a, f) => a + f.size, 0);
    expect(total).toBeGreaterThanOrEqual(size);
    expect(total).toBeLessThanOrEqual(Math.ceil(size * 1.25));
    const fetched = results.map((r) => (JSON.parse(r.stdout) as { bytesFetched: number }).bytesFetched);
    expect(fetched.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(Math.ceil(size * 1.25));
    for (const f of files) {
      const blob = path.join(store, 'blobs', 'sha256', f.sha.slice(0, 2), f.sha);
      const b = await stat(blob);
      // One inode per blob, which every node published: nobody replaced a blob another committed.
      for (const n of nodes) expect((await stat(path.join(n.modelsDir, f.dest))).ino).toBe(b.ino);
      expect(b.nlink).toBe(1 + nodes.length);
      expect(await fileSha256(blob)).toBe(f.sha);
    }
    expect(await listFiles(path.join(store, 'tmp'))).toEqual([]);
    // Every claim released.
    expect(await readdir(path.join(store, 'leases'))).toEqual([]);
  });

  it('a small blob claimed by a peer is skipped, then published from the peer\'s commit without a second download', async () => {
    const { manifest, store, files } = await smallRepo('claimed', 2, 200_000);
    const [slow, fast] = files as [SmallFile, SmallFile];
    hub.setFaults(slow.sha, { bytesPerSecond: 100_000 });
    const [a, b] = [await makeNode(root as string, 'a'), await makeNode(root as string, 'b')];
    const first = startSync(a, { manifest, storeDir: store, hub: hub.endpoint, args: ['--json'] });
    running.push(first);
    await waitFor('the first node to claim the slow blob', async () => ((await readdir(path.join(store, 'leases')).catch(() => [] as string[])).includes(`sha256-${slow.sha}`) ? true : undefined));
    const second = await startSync(b, { manifest, storeDir: store, hub: hub.endpoint, args: ['--json'] }).done;
    expectOk(second);
    expectOk(await first.done);
    expect(hub.stats.bytesServed.get(slow.sha)).toBe(slow.size);
    expect(hub.stats.bytesServed.get(fast.sha) ?? 0).toBeLessThanOrEqual(2 * fast.size);
    const blob = path.join(store, 'blobs', 'sha256', slow.sha.slice(0, 2), slow.sha);
    for (const n of [a, b]) expect((await stat(path.join(n.modelsDir, slow.dest))).ino).toBe((await stat(blob)).ino);
    expect(await readdir(path.join(store, 'leases'))).toEqual([]);
  });

  it('SIGKILL with blobs committed but not yet flushed (no folder fsync, no state DB row): final paths stay whole, and the next sync publishes them without fetching', async () => {
    const { manifest, store, files } = await smallRepo('kill', 120, 20_000);
    for (const f of files) hub.setFaults(f.sha, { bytesPerSecond: 40_000 });
    const node = await makeNode(root as string, 'n');
    const expected = Object.fromEntries(files.map((f) => [f.dest, f.sha]));
    const first = startSync(node, { manifest, storeDir: store, hub: hub.endpoint, args: ['--connections', '4'] });
    running.push(first);
    // Well before the end: the batch flushes at the end (or after thousands of rows / seconds).
    await waitFor('a few committed blobs', async () => ((await listFiles(path.join(store, 'blobs'))).length >= 8 ? true : undefined));
    first.child.kill('SIGKILL');
    await first.done;
    const report = await checkFinalPaths(node.modelsDir, expected, store);
    expect(report.corrupt).toEqual([]);
    const committed = (await listFiles(path.join(store, 'blobs'))).map((p) => path.basename(p));
    expect(committed.length).toBeGreaterThanOrEqual(8);

    hub.clearFaults();
    hub.resetStats();
    const second = await startSync(node, { manifest, storeDir: store, hub: hub.endpoint, args: ['--json'] }).done;
    expectOk(second);
    // What was committed before the kill is published from the store, not fetched again.
    for (const sha of committed) expect(hub.stats.bytesServed.get(sha) ?? 0).toBe(0);
    const after = await checkFinalPaths(node.modelsDir, expected, store);
    expect({ corrupt: after.corrupt, published: after.published, strays: after.strays }).toEqual({ corrupt: [], published: files.length, strays: [] });
    // The killed run's partials (no one adopts a small blob's) and its claims' owner file are
    // gc's to clear, and never under a final name.
    for (const n of await listFiles(path.join(store, 'tmp'))) expect(n).toMatch(/\.(part|journal)(\.tmp)?$|^claim-owner-/);
    // Its claims (their holder died on this machine) were taken over at once, and released.
    expect(await readdir(path.join(store, 'leases'))).toEqual([]);
    // And the index is whole again: a third run is a warm start.
    hub.resetStats();
    const third = await startSync(node, { manifest, storeDir: store, hub: hub.endpoint, args: ['--json'] }).done;
    expectOk(third);
    expect(hub.stats.requests).toEqual([]);
  });
});

describe('commitBlob', () => {
  const place = (r: string, name = 'abcd'): BlobPlace => ({ base: r, shown: r, segs: ['blobs', 'sha256', 'ab'], name });

  it("with 'link' never replaces: of two writers of the same bytes the first commit stays, the second drops its copy", async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-commit-'));
    const final = path.join(root, 'blobs', 'sha256', 'ab', 'abcd');
    const parts = ['p1', 'p2'].map((n) => path.join(root as string, 'tmp', n));
    await mkdir(path.join(root, 'tmp'));
    for (const p of parts) await writeFile(p, 'same bytes');
    const ino1 = (await stat(parts[0] as string)).ino;
    expect(await commitBlob(parts[0] as string, place(root), { how: 'link' })).toBe('committed');
    expect(await commitBlob(parts[1] as string, place(root), { how: 'link' })).toBe('already-present');
    const st = await stat(final);
    expect(st.ino).toBe(ino1);
    expect(st.nlink).toBe(1);
    expect(st.mode & 0o777).toBe(0o444);
    expect(await readdir(path.join(root, 'tmp'))).toEqual([]);
  });

  it('a partial that is gone fails with ENOENT; the folders made are told to fsync, parents included', async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-commit-'));
    const dirty: string[] = [];
    const dirs = { deferDirSync: (d: string) => void dirty.push(d) };
    const part = path.join(root, 'p');
    await writeFile(part, 'x');
    await chmod(part, 0o644);
    expect(await commitBlob(part, place(root), { how: 'link', dirs })).toBe('committed');
    // New folders are entries in their parents: those are deferred too, not just the shard.
    expect(dirty).toEqual(expect.arrayContaining([path.join(root, 'blobs', 'sha256', 'ab'), path.join(root, 'blobs', 'sha256'), root]));
    await expect(commitBlob(path.join(root, 'gone'), place(root, 'other'), { how: 'link', dirs })).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
