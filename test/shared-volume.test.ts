import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fileSha256, listFiles, makeNode, startSync, waitFor, writeManifest, type Finished, type NodeDirs, type RunningNode } from './support/cli-nodes.js';
import { makeSafetensors, sha256Hex, startHub, type Hub } from './support/hub.js';

/**
 * Several real `modelsync sync` processes on one store (one shared volume, many nodes), each with
 * its own state dir and models dir, against the Hub stand-in with a CDN paced per connection so
 * that their downloads overlap.
 */
const PAYLOAD = 6 * 1024 * 1024;
const CHUNK = '512K';
const PACE = 500_000; // bytes/s per connection; 4 connections: ~2 MB/s, ~3 s for the file
const DEST = 'checkpoints/model.safetensors';
const TOKEN = 'hf_TESTSECRET_shared_volume';

let hub: Hub;
let root: string;
let running: RunningNode[] = [];
let seed = 100;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(TOKEN);
});

afterAll(async () => {
  await hub.close();
});

afterEach(async () => {
  for (const r of running) {
    if (r.child.exitCode === null && r.child.signalCode === null) {
      r.child.kill('SIGCONT');
      r.child.kill('SIGKILL');
    }
  }
  await Promise.allSettled(running.map((r) => r.done));
  running = [];
  if (root) await rm(root, { recursive: true, force: true });
});

interface Setup {
  readonly sha: string;
  readonly size: number;
  readonly manifest: string;
  readonly store: string;
  readonly blob: string;
}

/** A fresh repo (so byte counters are per test), a manifest for it, and an empty store. */
async function setup(label: string): Promise<Setup> {
  root = await mkdtemp(path.join(os.tmpdir(), `modelsync-shared-${label}-`));
  const content = makeSafetensors(PAYLOAD, seed++);
  const sha = sha256Hex(content);
  const repo = `acme/${label}`;
  hub.addRepo({ id: repo, files: [{ path: 'model.safetensors', content }] });
  hub.setFaults(sha, { bytesPerSecond: PACE });
  const manifest = await writeManifest(path.join(root, 'manifest.json'), [{ source: `hf://${repo}/model.safetensors`, dest: DEST }]);
  const store = path.join(root, 'store');
  return { sha, size: content.length, manifest, store, blob: path.join(store, 'blobs', 'sha256', sha.slice(0, 2), sha) };
}

function sync(s: Setup, node: NodeDirs, staleMs: number, extra: readonly string[] = []): RunningNode {
  const r = startSync(node, {
    manifest: s.manifest,
    storeDir: s.store,
    hub: hub.endpoint,
    args: ['--chunk-size', CHUNK, '--connections', '4', ...extra],
    env: { MODELSYNC_LEASE_STALE_MS: String(staleMs), HF_TOKEN: TOKEN },
  });
  running.push(r);
  return r;
}

function served(s: Setup): number {
  return hub.stats.bytesServed.get(s.sha) ?? 0;
}

/** Bytes the journals in STORE/tmp say are on disk (the best one). */
async function journaled(s: Setup): Promise<number> {
  let best = 0;
  for (const n of await readdir(path.join(s.store, 'tmp')).catch(() => [])) {
    if (!n.endsWith('.journal')) continue;
    try {
      const j = JSON.parse(await readFile(path.join(s.store, 'tmp', n), 'utf8')) as { written: number[] };
      best = Math.max(best, j.written.reduce((a, b) => a + b, 0));
    } catch {
      /* being replaced right now */
    }
  }
  return best;
}

function expectOk(f: Finished): void {
  if (f.code !== 0) throw new Error(`exit ${f.code ?? f.signal}\nstdout: ${f.stdout}\nstderr: ${f.stderr}`);
  expect(f.stderr + f.stdout).not.toContain('hf_TESTSECRET');
}

async function expectPublished(s: Setup, nodes: readonly NodeDirs[]): Promise<void> {
  expect(await fileSha256(s.blob)).toBe(s.sha);
  for (const n of nodes) expect(await fileSha256(path.join(n.modelsDir, DEST))).toBe(s.sha);
  // Nothing half-written left in the store, and every blob there is whole and correct.
  expect((await listFiles(path.join(s.store, 'tmp'))).filter((f) => f.endsWith('.part'))).toEqual([]);
  for (const f of await listFiles(path.join(s.store, 'blobs'))) expect(await fileSha256(path.join(s.store, 'blobs', f))).toBe(path.basename(f));
}

describe('one shared volume, many nodes', () => {
  it('four nodes syncing at once fetch the blob from origin once and publish identical files', async () => {
    const s = await setup('together');
    const nodes = await Promise.all([0, 1, 2, 3].map((i) => makeNode(root, `node${i}`)));
    // A long stale time: nobody is to be judged dead here, however loaded the machine is.
    const results = await Promise.all(nodes.map((n) => sync(s, n, 8000, ['--json']).done));
    results.forEach(expectOk);
    expect(served(s)).toBeLessThanOrEqual(Math.ceil(s.size * 1.25));
    const fetched = results.map((r) => (JSON.parse(r.stdout) as { bytesFetched: number }).bytesFetched);
    expect(fetched.filter((n) => n > 0)).toHaveLength(1);
    await expectPublished(s, nodes);
  });

  it('a node killed mid-download is taken over by another, which resumes its partial', async () => {
    const s = await setup('killed');
    const [a, b] = [await makeNode(root, 'a'), await makeNode(root, 'b')];
    const first = sync(s, a, 1500);
    await waitFor('a journal with a third of the file', async () => ((await journaled(s)) >= s.size / 3 ? true : undefined));
    first.child.kill('SIGKILL');
    await first.done;
    const onDisk = await journaled(s);
    const second = await sync(s, b, 1500, ['--json']).done;
    expectOk(second);
    const report = JSON.parse(second.stdout) as { bytesFetched: number };
    // The journaled bytes were reused, not fetched again...
    expect(report.bytesFetched).toBeLessThanOrEqual(s.size - onDisk);
    expect(second.stderr).toContain('resuming partial download');
    // ...so origin served well under two copies in all.
    expect(served(s)).toBeLessThan(2 * s.size);
    await expectPublished(s, [b]);
  });

  it('a holder stopped past the stale time yields to the node that took over, and writes nothing more', async () => {
    const s = await setup('stopped');
    const [a, b] = [await makeNode(root, 'a'), await makeNode(root, 'b')];
    const first = sync(s, a, 1500, ['--chunk-size', '256K']);
    await waitFor('a third of the file served', () => (served(s) >= s.size / 3 ? true : undefined));
    // Park the holder where it has no write in flight: its next requests stall after one byte
    // (buffered, never written), and its journal catches up with what it wrote.
    const cdnGets = (): number => hub.stats.requests.filter((r) => r.host === 'cdn' && r.method === 'GET').length;
    const before = cdnGets();
    hub.setFaults(s.sha, { bytesPerSecond: PACE, stallAfterBytes: { bytes: 1, times: 4 } });
    await waitFor('the holder to be parked on 4 stalled requests', () => (cdnGets() - before >= 4 ? true : undefined));
    const parkedAt = Date.now();
    const journal = async (): Promise<number | undefined> => {
      for (const n of await readdir(path.join(s.store, 'tmp'))) if (n.endsWith('.journal')) return (await stat(path.join(s.store, 'tmp', n))).mtimeMs;
      return undefined;
    };
    await waitFor('its journal to be rewritten once parked', async () => ((await journal()) ?? 0) > parkedAt + 20 ? true : undefined);
    first.child.kill('SIGSTOP');
    hub.setFaults(s.sha, { bytesPerSecond: PACE });

    const second = await sync(s, b, 1500, ['--json', '--chunk-size', '256K']).done;
    expectOk(second);
    expect((JSON.parse(second.stdout) as { bytesFetched: number }).bytesFetched).toBeLessThan(s.size);
    const committed = await stat(s.blob);
    expect(await fileSha256(s.blob)).toBe(s.sha);

    first.child.kill('SIGCONT');
    const resumed = await first.done;
    // It lost its lease, yielded, found the peer's commit and published it.
    expectOk(resumed);
    expect(resumed.stderr).toContain('lost the lease');
    const after = await stat(s.blob);
    // Not one more byte from the old holder landed in the blob its partial became.
    expect([after.ino, after.mtimeMs, after.size]).toEqual([committed.ino, committed.mtimeMs, committed.size]);
    await expectPublished(s, [a, b]);
  });
});
