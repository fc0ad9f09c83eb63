/**
 * Warm start (issue #3, design.md invariant 3): with everything in place, `sync` is decided by
 * stat + the state DB, from the manifest validated last time, without loading the manifest
 * parser, the logger, the download stack or the full CLI. Anything changed or missing falls
 * through to the full sync, which repairs it.
 */
import { mkdir, readdir, readFile, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../src/config.js';
import { silentLogger } from '../src/log.js';
import { lookUpFiles, rememberManifest } from '../src/manifest/cache.js';
import { lockPathFor, readManifestFiles } from '../src/manifest/files.js';
import { parseManifest } from '../src/manifest/load.js';
import type { Manifest } from '../src/manifest/types.js';
import { validateManifest } from '../src/manifest/validate.js';
import { openContext } from '../src/sync/context.js';
import { runSync } from '../src/sync/engine.js';
import { warmSync } from '../src/sync/warm.js';
import { REPO_ROOT, runCli, type CliResult, type Sandbox } from './support/cli.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, fileSha256, sha256, type TestModel } from './support/models.js';

const { hub, sandbox } = await useHubSandbox();
let sb: Sandbox;


const CONFIG = Buffer.from('{"hidden_size": 8}\n');
const CKPT = 'checkpoints/w.safetensors';
const CFG = 'configs/w.json';
/** Modules a warm sync has no use for; `yaml` is loaded only to parse a manifest. */
const HEAVY = /\/node_modules\/(yaml|zod|pino|p-queue|@aws-sdk\/[^/]+|@huggingface\/hub|chokidar)\//;
const FULL_CLI = /\/dist\/cli\.c?js$/;

interface Synced {
  readonly m: TestModel;
  readonly config: Config;
  readonly manifest: Manifest;
}

/** A first, complete sync of an LFS model and a small plain (git-sha1) file. */
async function syncedOnce(): Promise<Synced> {
  sb = await sandbox(hub.endpoint);
  const m = addModel(hub, 300_000, { extra: [{ path: 'config.json', content: CONFIG, lfs: false }] });
  await sb.writeManifest([
    { source: m.uri, dest: CKPT },
    { source: `hf://${m.repo}/config.json`, dest: CFG },
  ]);
  const r = await runCli(['sync'], sb.env());
  expect(r.code).toBe(0);
  return { m, config: loadConfig({}, sb.env()), manifest: validateManifest(await readManifestFiles(sb.manifest)) };
}

let logs = 0;

/**
 * `modelsync ARGS` with every module it resolves logged (test/support/import-log.mjs), and at
 * debug level: `parsed` says whether it validated the manifest (the CLI's bundle holds the
 * parser, so no module load shows it).
 */
async function traced(args: readonly string[]): Promise<CliResult & { modules: string[]; parsed: boolean }> {
  const log = path.join(sb.dir, `imports-${++logs}.log`);
  const hook = pathToFileURL(path.join(REPO_ROOT, 'test/support/import-log.mjs')).href;
  const r = await runCli(args, sb.env({ NODE_OPTIONS: `--import=${hook}`, IMPORT_LOG: log, MODELSYNC_LOG_LEVEL: 'debug' }));
  const modules = (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean);
  // The log's JSON lines; an error's one line (exit 2) is not one.
  const parsed = r.stderr.split('\n').some((l) => l.startsWith('{') && typeof (JSON.parse(l) as { validate?: unknown }).validate === 'string');
  return { ...r, modules, parsed };
}

function dbFiles(): Promise<string[]> {
  return readdir(sb.state).then((names) => names.filter((n) => n.startsWith('state.db')));
}

describe('warm sync', () => {
  it('loads none of the parser, logger, download stack or full CLI, and asks the network nothing', async () => {
    await syncedOnce();
    hub.resetStats();
    const warm = await traced(['sync']);
    expect(warm.code).toBe(0);
    expect(warm.stdout).toMatch(/2 entries: 2 present, 0 published, 0 failed/);
    expect(hub.stats.requests).toEqual([]);
    // The hook saw the process load its own modules: an empty list would prove nothing.
    expect(warm.modules.some((u) => u.endsWith('/dist/modelsync.cjs'))).toBe(true);
    expect(warm.modules.filter((u) => HEAVY.test(u) || FULL_CLI.test(u))).toEqual([]);
    expect(warm.parsed).toBe(false);
    const json = await traced(['sync', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, bytesFetched: 0, entries: [{ dest: CKPT, state: 'present' }, { dest: CFG, state: 'present' }] });
    expect(json.modules.filter((u) => HEAVY.test(u) || FULL_CLI.test(u))).toEqual([]);
  });

  it("reports exactly what the full sync reports for the same state", async () => {
    const s = await syncedOnce();
    const warm = await warmSync(s.config, s.manifest);
    const ctx = await openContext(s.config, silentLogger());
    try {
      const full = await runSync(ctx, s.manifest);
      expect(full.entries.every((e) => e.state === 'present')).toBe(true);
      expect(JSON.parse(JSON.stringify(warm.report?.entries))).toEqual(JSON.parse(JSON.stringify(full.entries)));
    } finally {
      ctx.close();
    }
  });

  /** Each returns the sha256 the checkpoint must have once the full sync has run. */
  const PERTURBATIONS: [string, (s: Synced) => Promise<string>][] = [
    ['a published file deleted', async (s) => {
      await unlink(path.join(sb.models, CKPT));
      return s.m.sha256;
    }],
    ['a published file replaced by other bytes', async (s) => {
      const f = path.join(sb.models, CKPT);
      await unlink(f);
      await writeFile(f, Buffer.alloc(300_000, 7));
      return s.m.sha256;
    }],
    ['a published file touched (mtime moved)', async (s) => {
      const t = new Date(Date.now() + 60_000);
      await utimes(path.join(sb.models, CFG), t, t);
      return s.m.sha256;
    }],
    ['the state DB deleted', async (s) => {
      for (const f of await dbFiles()) await rm(path.join(sb.state, f));
      return s.m.sha256;
    }],
    ['a dest that now wants another source', async (s) => {
      const other = addModel(hub, 1000);
      await sb.writeManifest([
        { source: other.uri, dest: CKPT },
        { source: `hf://${s.m.repo}/config.json`, dest: CFG },
      ]);
      return other.sha256;
    }],
  ];

  it.each(PERTURBATIONS)('%s: falls through to the full sync, which repairs it; warm again after', async (_what, perturb) => {
    const s = await syncedOnce();
    const expected = await perturb(s);
    const manifest = validateManifest(await readManifestFiles(sb.manifest));
    expect(await warmSync(s.config, manifest)).toEqual({});
    const r = await traced(['sync']);
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(r.modules.some((u) => FULL_CLI.test(u))).toBe(true);
    expect(await fileSha256(path.join(sb.models, CKPT))).toBe(expected);
    expect(await fileSha256(path.join(sb.models, CFG))).toBe(sha256(CONFIG));
    // The full sync left the state a warm start trusts.
    expect((await warmSync(s.config, manifest)).report?.entries.map((e) => e.state)).toEqual(['present', 'present']);
    const again = await traced(['sync']);
    expect(again.stdout).toMatch(/2 entries: 2 present/);
    expect(again.modules.filter((u) => HEAVY.test(u) || FULL_CLI.test(u))).toEqual([]);
  });

  it('a corrupt state DB: the warm open replaces it, and the full sync is told (it re-hashes store blobs)', async () => {
    const s = await syncedOnce();
    await writeFile(path.join(sb.state, 'state.db'), Buffer.alloc(8192, 'not a database! '));
    const warm = await warmSync(s.config, s.manifest);
    expect(warm.report).toBeUndefined();
    expect(warm.dbRecreated).toMatch(/state DB was unreadable/);
    expect((await readdir(sb.state)).some((f) => /^state\.db\.corrupt-\d+$/.test(f))).toBe(true);
  });
});

describe('the validated-manifest cache', () => {
  it('an edited manifest is parsed again and its new entry synced; the next run is warm', async () => {
    const s = await syncedOnce();
    const more = addModel(hub, 2000);
    await sb.writeManifest([
      { source: s.m.uri, dest: CKPT },
      { source: `hf://${s.m.repo}/config.json`, dest: CFG },
      { source: more.uri, dest: 'loras/more.safetensors' },
    ]);
    const r = await traced(['sync']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/3 entries: 2 present, 1 published, 0 failed/);
    expect(r.parsed).toBe(true);
    const warm = await traced(['sync']);
    expect(warm.stdout).toMatch(/3 entries: 3 present/);
    expect(warm.modules.filter((u) => HEAVY.test(u))).toEqual([]);
  });

  it('a lock file that appears empty is refused as unusable (exit 2), as the full path refuses it, not taken for no lock', async () => {
    await syncedOnce();
    await writeFile(lockPathFor(sb.manifest), '');
    const r = await traced(['sync']);
    expect(r.code).toBe(2);
    expect(r.parsed).toBe(true);
    await unlink(lockPathFor(sb.manifest));
    const warm = await traced(['sync']);
    expect(warm.code).toBe(0);
    expect(warm.modules.filter((u) => HEAVY.test(u))).toEqual([]);
  });

  it('a change that only touches the text (or the lock beside it) is a miss too; a bad edit is refused as before', async () => {
    await syncedOnce();
    await writeFile(sb.manifest, `${await readFile(sb.manifest, 'utf8')}\n\n`);
    const spaced = await traced(['sync']);
    expect(spaced.stdout).toMatch(/2 entries: 2 present/);
    expect(spaced.parsed).toBe(true);
    const locked = await runCli(['lock'], sb.env());
    expect(locked.code).toBe(0);
    const afterLock = await traced(['sync']);
    expect(afterLock.code).toBe(0);
    expect(afterLock.parsed).toBe(true);
    await writeFile(sb.manifest, '{"version": 1, "models": [{"source": "hf://a/b/c.safetensors", "dest": "/etc/passwd"}]}');
    const bad = await runCli(['sync'], sb.env());
    expect(bad.code).toBe(2);
  });

  it('a bad --log-level or MODELSYNC_LOG_LEVEL is bad usage (exit 2, one line) on the warm path as on the cold one', async () => {
    await syncedOnce();
    for (const [args, env] of [
      [['sync', '--log-level', 'loud'], sb.env()],
      [['sync'], { ...sb.env(), MODELSYNC_LOG_LEVEL: 'loud' }],
      [['plan', '--log-level', 'loud'], sb.env()],
    ] as const) {
      const r = await runCli([...args], env);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/log.level must be one of fatal, error, warn, info, debug, trace, silent, got "loud"/i)]);
    }
    const upper = await runCli(['sync', '--log-level', 'WARN'], sb.env());
    expect(upper.code).toBe(0);
  });

  it('an unreadable cache file is a miss, not an error, and is rewritten', async () => {
    await syncedOnce();
    const cache = path.join(sb.state, 'manifest-cache.json');
    expect((await stat(cache)).isFile()).toBe(true);
    await writeFile(cache, '{"key": 12, "manifest": ');
    const r = await traced(['sync']);
    expect(r.code).toBe(0);
    expect(r.parsed).toBe(true);
    const warm = await traced(['sync']);
    expect(warm.stdout).toMatch(/2 entries: 2 present/);
    expect(warm.modules.filter((u) => HEAVY.test(u))).toEqual([]);
  });

  it('never writes a manifest that holds a presigned URL (its query is a credential)', async () => {
    sb = await sandbox();
    await mkdir(sb.state);
    const text = JSON.stringify({
      version: 1,
      models: [{ source: 'https://example.invalid/m.safetensors?X-Amz-Signature=SIGdoNotLeak', dest: 'checkpoints/m.safetensors', sha256: 'a'.repeat(64) }],
    });
    const files = { path: sb.manifest, lockPath: lockPathFor(sb.manifest), manifest: text, lock: undefined };
    await rememberManifest(sb.state, lookUpFiles(sb.state, files), parseManifest(text, sb.manifest));
    expect(await readdir(sb.state)).toEqual([]);
    const plain = text.replace('?X-Amz-Signature=SIGdoNotLeak', '');
    await rememberManifest(sb.state, lookUpFiles(sb.state, { ...files, manifest: plain }), parseManifest(plain, sb.manifest));
    expect(await readdir(sb.state)).toEqual(['manifest-cache.json']);
  });

  it('--update-lock never takes the cached manifest', async () => {
    await syncedOnce();
    const r = await traced(['sync', '--update-lock']);
    expect(r.code).toBe(0);
    expect(r.parsed).toBe(true);
  });
});
