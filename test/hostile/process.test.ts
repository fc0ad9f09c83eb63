/**
 * hostile-world.md, the process: SIGKILL between a blob's commit and its publish, and SIGKILL at
 * random points of a real download (a few rounds here; `npm run stress` runs 50).
 * SIGKILL mid-download followed by a resume from the journal is in test/resume.test.ts.
 */
import { link, readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from '../support/cli.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { checkFinalPaths } from '../support/final-paths.js';
import { addModel, fileSha256 } from '../support/models.js';
import { sigkillStress } from '../stress/sigkill.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;


describe('process faults (hostile-world.md, the disk and the process)', () => {
  it('killed between commit and publish: the next sync publishes the committed blob without downloading, and clears the half-made link', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 500_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/k.safetensors' }]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    // Rebuild the state a kill leaves between `link(blob, tmp)` and `rename(tmp, dest)`: the blob
    // committed (read-only, recorded as verified), no dest, no entry row, the temp link in place.
    const dest = path.join(sb.models, 'checkpoints/k.safetensors');
    const blob = path.join(sb.models, '.modelsync-store/blobs/sha256', m.sha256.slice(0, 2), m.sha256);
    await unlink(dest);
    const leftover = path.join(sb.models, 'checkpoints', '.k.safetensors.modelsync-0123456789ab');
    await link(blob, leftover);
    const db = new Database(path.join(sb.state, 'state.db'));
    db.prepare('DELETE FROM published').run();
    db.close();

    hub.resetStats();
    const r = await runCli(['sync'], sb.env());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/1 entries: 0 present, 1 published, 0 failed/);
    expect(hub.stats.requests.filter((q) => q.host === 'cdn')).toEqual([]);
    expect((await stat(dest)).ino).toBe((await stat(blob)).ino);
    expect(await fileSha256(dest)).toBe(m.sha256);
    expect(await readdir(path.join(sb.models, 'checkpoints'))).toEqual(['k.safetensors']);
    expect((await stat(blob)).nlink).toBe(2);
  });

  it('killed at random points of a large download, again and again: never a partial or wrong file at a final path', async () => {
    const s = await sigkillStress({ rounds: 4, sizeBytes: 4 * 1024 * 1024, bytesPerSecond: 1_000_000 });
    expect({ corrupt: s.corrupt, leaks: s.leaks, failures: s.failures }).toEqual({ corrupt: [], leaks: [], failures: [] });
    expect(s.finalOk).toBe(true);
    expect(s.runs).toBe(6);
  });

  it('the manifest is rewritten while a sync runs: that sync finishes with what it read, nothing half-published; the next applies the edit', async () => {
    sb = await sandbox(hub.endpoint);
    const a = addModel(hub, 1024 * 1024);
    const b = addModel(hub, 100_000);
    hub.setFaults(a.sha256, { bytesPerSecond: 250_000 });
    await sb.writeManifest([{ source: a.uri, dest: 'checkpoints/old.safetensors' }]);
    const running = runCli(['sync', '--chunk-size', '256K', '--connections', '4'], sb.env());
    // Once the download is under way, the file is rewritten in place (not renamed over).
    const tmp = path.join(sb.models, '.modelsync-store/tmp');
    for (let i = 0; i < 400 && !(await readdir(tmp).catch(() => [] as string[])).some((n) => n.endsWith('.part')); i++) await new Promise((r) => setTimeout(r, 25));
    await sb.writeManifest([
      { source: a.uri, dest: 'checkpoints/new.safetensors' },
      { source: b.uri, dest: 'loras/b.safetensors' },
    ]);
    const r = await running;
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/1 entries: 0 present, 1 published, 0 failed/);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/old.safetensors'))).toBe(a.sha256);
    expect((await checkFinalPaths(sb.models, { 'checkpoints/old.safetensors': a.sha256, 'checkpoints/new.safetensors': a.sha256, 'loras/b.safetensors': b.sha256 })).published).toBe(1);
    hub.clearFaults();
    hub.resetStats();
    const next = await runCli(['sync'], sb.env());
    expect(next.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/new.safetensors'))).toBe(a.sha256);
    expect(await fileSha256(path.join(sb.models, 'loras/b.safetensors'))).toBe(b.sha256);
    // The edit moved a's dest: published from the store, not fetched again.
    expect(hub.stats.bytesServed.get(a.sha256) ?? 0).toBe(0);
  });

  it('the invariant checker itself sees a partial at a final path', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 50_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/c.safetensors' }]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    const ok = await checkFinalPaths(sb.models, { 'checkpoints/c.safetensors': m.sha256 });
    expect(ok.corrupt).toEqual([]);
    const bad = await checkFinalPaths(sb.models, { 'checkpoints/c.safetensors': 'f'.repeat(64) });
    expect(bad.corrupt).toHaveLength(1);
  });
});
