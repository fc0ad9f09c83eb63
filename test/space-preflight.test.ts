import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkSpace, type Plan } from '../src/sync/plan.js';
import { makeNode, startNode, writeManifest } from './support/cli-nodes.js';
import { makeSafetensors, startHub, type Hub } from './support/hub.js';
import { thrown } from './support/thrown.js';

/**
 * The preflight on a shared volume: free space minus what other nodes' downloads in progress
 * still have to write (their journals say how far they are; their leases say they are alive).
 */
let hub: Hub;
let root: string;

beforeAll(async () => {
  hub = await startHub();
  hub.addRepo({ id: 'acme/space', files: [{ path: 'mine.safetensors', content: makeSafetensors(50_000, 9) }] });
  root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-space-'));
});

afterAll(async () => {
  await hub.close();
  await rm(root, { recursive: true, force: true });
});

const OTHER = `sha256-${'cd'.repeat(32)}`;
const DEAD = `sha256-${'ef'.repeat(32)}`;

async function partial(store: string, key: string, size: number, written: number[]): Promise<void> {
  const base = path.join(store, 'tmp', `${key}.0badc0de`);
  await writeFile(`${base}.journal`, JSON.stringify({ v: 1, version: 'x', size, chunkSize: size / written.length, written }));
  await writeFile(`${base}.part`, '');
  await truncate(`${base}.part`, size);
}

describe('disk space preflight on a shared volume', () => {
  it('counts what live peers still have to write, not what dead ones left behind', async () => {
    const node = await makeNode(root, 'n');
    const store = path.join(root, 'store');
    await mkdir(path.join(store, 'tmp'), { recursive: true });
    await mkdir(path.join(store, 'leases', OTHER), { recursive: true });
    await writeFile(path.join(store, 'leases', OTHER, 'owner'), '{"token":"0badc0de"}');
    await partial(store, OTHER, 4_000_000, [1_000_000, 500_000, 0, 0]);
    await partial(store, DEAD, 8_000_000, [1_000_000, 0]);
    const manifest = await writeManifest(path.join(root, 'm.json'), [{ source: 'hf://acme/space/mine.safetensors', dest: 'loras/mine.safetensors' }]);
    const r = await startNode(node, ['plan', '--json', '--manifest', manifest, '--models-dir', node.modelsDir, '--store-dir', store], {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: node.stateDir,
      MODELSYNC_STATE_DIR: node.stateDir,
      HF_ENDPOINT: hub.endpoint,
    }).done;
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout) as { othersPendingBytes: number; bytesToFetch: number };
    expect(plan.othersPendingBytes).toBe(4_000_000 - 1_500_000);
    expect(plan.bytesToFetch).toBeGreaterThan(50_000);
  });

  it('refuses a plan that only fits if the peers’ downloads are forgotten, and says why', () => {
    const plan = { bytesToFetch: 10_000, freeBytes: 15_000, othersPendingBytes: 8_000 } as Plan;
    expect(thrown(() => checkSpace(plan))).toMatchObject({ code: 'E_NO_SPACE', message: expect.stringContaining('other nodes are still writing') });
    expect(() => checkSpace({ ...plan, othersPendingBytes: 4_000 })).not.toThrow();
  });
});
