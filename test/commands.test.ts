import { chmod, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256 } from './support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;

describe('plan, status, verify', () => {
  it('plan lists what would be fetched and the bytes, and moves no byte', async () => {
    sb = await sandbox(hub.endpoint);
    const a = addModel(hub, 100_000);
    const b = addModel(hub, 50_000);
    await sb.writeManifest([
      { source: a.uri, dest: 'checkpoints/a.safetensors' },
      { source: a.uri, dest: 'loras/a2.safetensors' },
      { source: b.uri, dest: 'vae/b.safetensors' },
    ]);
    hub.resetStats();
    const r = await runCli(['plan', '--json'], sb.env());
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout) as { entries: { dest: string; action: string }[]; bytesToFetch: number; fits: boolean };
    expect(plan.entries.map((e) => e.action)).toEqual(['fetch', 'fetch', 'fetch']);
    expect(plan.bytesToFetch).toBe(a.content.length + b.content.length);
    expect(plan.fits).toBe(true);
    expect(hub.stats.requests.filter((q) => q.host === 'cdn')).toEqual([]);
    const human = await runCli(['plan'], sb.env());
    expect(human.stdout).toMatch(/to fetch: .* in 2 blob\(s\)/);
  });

  it('status tells present, changed and missing apart; verify --full finds a tampered file', async () => {
    sb = await sandbox(hub.endpoint);
    const a = addModel(hub, 100_000);
    const b = addModel(hub, 60_000);
    await sb.writeManifest([
      { source: a.uri, dest: 'checkpoints/a.safetensors' },
      { source: b.uri, dest: 'checkpoints/b.safetensors' },
    ]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    const ok = await runCli(['status', '--json'], sb.env());
    expect(ok.code).toBe(0);
    expect((JSON.parse(ok.stdout) as { entries: { state: string }[] }).entries.map((e) => e.state)).toEqual(['present', 'present']);
    expect((await runCli(['verify'], sb.env())).code).toBe(0);

    // Replace b's published file with other bytes (a tamper the store does not share).
    const bPath = path.join(sb.models, 'checkpoints/b.safetensors');
    await rm(bPath);
    await writeFile(bPath, Buffer.alloc(60_000, 1));
    await rm(path.join(sb.models, 'checkpoints/a.safetensors'));
    const st = await runCli(['status'], sb.env());
    expect(st.code).toBe(1);
    expect(st.stdout).toMatch(/missing\s+checkpoints\/a\.safetensors/);
    expect(st.stdout).toMatch(/changed\s+checkpoints\/b\.safetensors/);
    // --full finds the tampered file and repairs it from the store (issue 13); a stays missing.
    const v = await runCli(['verify', '--full'], sb.env());
    expect(v.code).toBe(1);
    expect(v.stdout).toMatch(/repaired\s+checkpoints\/b\.safetensors: was corrupt \(sha256 expected [0-9a-f]{64}, got [0-9a-f]{64}\); fetched again/);
    expect(v.stdout).toMatch(/missing\s+checkpoints\/a\.safetensors/);
    expect(await fileSha256(bPath)).toBe(b.sha256);
    // sync repairs both from the store, without downloading again
    hub.resetStats();
    await chmod(bPath, 0o644);
    const fix = await runCli(['sync'], sb.env());
    expect(fix.code).toBe(0);
    expect(hub.stats.requests.filter((q) => q.host === 'cdn')).toEqual([]);
    expect((await runCli(['verify', '--full'], sb.env())).code).toBe(0);
  });

  it('verify --full rebuilds a lost state DB', async () => {
    sb = await sandbox(hub.endpoint);
    const a = addModel(hub, 80_000);
    await sb.writeManifest([{ source: a.uri, dest: 'checkpoints/a.safetensors' }]);
    expect((await runCli(['sync'], sb.env())).code).toBe(0);
    await rm(sb.state, { recursive: true, force: true });
    expect((await runCli(['verify'], sb.env())).code).toBe(1);
    const full = await runCli(['verify', '--full'], sb.env());
    expect(full.code).toBe(0);
    hub.resetStats();
    const again = await runCli(['sync'], sb.env());
    expect(again.code).toBe(0);
    expect(hub.stats.requests).toEqual([]);
  });
});
