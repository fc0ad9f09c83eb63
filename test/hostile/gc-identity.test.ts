/**
 * hostile-world.md: "two installs on one machine sharing a store -> distinct gc identities; gc
 * never removes a blob a live manifest uses" (issue 13, class 13). Two models dirs (two ComfyUI
 * installs) share a store and, by default, one state dir: one id for both meant one reference
 * record, which each complete sync rewrote with its own manifest's keys only.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StateDb } from '../../src/state/db.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { leakedSecrets, runCli, sandbox, type Sandbox } from '../support/cli.js';
import { exists, fileSha256, sha256 } from '../support/models.js';

const A = Buffer.from('install A model\n'.repeat(5000));
const B = Buffer.from('install B model\n'.repeat(7000));

let web: ByteServer;
let sb: Sandbox;

beforeAll(async () => {
  web = await startByteServer({ files: { '/a.gguf': A, '/b.gguf': B } });
});
afterAll(async () => {
  await web.close();
});
afterEach(async () => {
  await sb?.cleanup();
});

interface Install {
  readonly models: string;
  readonly manifest: string;
  env(extra?: Record<string, string>): Record<string, string>;
}

/** Two models dirs, one shared store outside both, one state dir (the default for one user). */
async function twoInstalls(): Promise<{ a: Install; b: Install; store: string }> {
  sb = await sandbox();
  const store = path.join(sb.dir, 'shared-store');
  const make = async (name: string, file: string, bytes: Buffer): Promise<Install> => {
    const models = path.join(sb.dir, name, 'models');
    await mkdir(models, { recursive: true });
    const manifest = path.join(sb.dir, name, 'manifest.json');
    await writeFile(manifest, JSON.stringify({ version: 1, models: [{ source: `${web.url}/${file}`, dest: `checkpoints/${file}`, sha256: sha256(bytes) }] }));
    return { models, manifest, env: (extra = {}) => sb.env({ MODELSYNC_MODELS_DIR: models, MODELSYNC_MANIFEST: manifest, MODELSYNC_STORE_DIR: store, ...extra }) };
  };
  return { a: await make('a', 'a.gguf', A), b: await make('b', 'b.gguf', B), store };
}

function blob(store: string, bytes: Buffer): string {
  const hex = sha256(bytes);
  return path.join(store, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

async function records(store: string): Promise<{ node: string; modelsDir?: string; keys: string[] }[]> {
  const dir = path.join(store, 'refs');
  const names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
  return Promise.all(names.map(async (n) => JSON.parse(await readFile(path.join(dir, n), 'utf8')) as { node: string; modelsDir?: string; keys: string[] }));
}

describe('two installs on one machine never share a gc identity (issue 13, class 13)', () => {
  it('two models dirs sharing a store and a state dir get one record each; gc keeps every blob a live manifest uses', async () => {
    const { a, b, store } = await twoInstalls();
    expect((await runCli(['sync'], a.env())).code).toBe(0);
    expect((await runCli(['sync'], b.env())).code).toBe(0);
    // And again, warm (the warm path rewrites the record too), in the order that used to lose A's keys.
    expect((await runCli(['sync'], a.env())).code).toBe(0);
    expect((await runCli(['sync'], b.env())).code).toBe(0);
    const recs = await records(store);
    expect(recs).toHaveLength(2);
    expect(new Set(recs.map((r) => r.node)).size).toBe(2);
    expect(recs.map((r) => r.modelsDir).sort()).toEqual([a.models, b.models].sort());
    expect(recs.find((r) => r.modelsDir === a.models)?.keys).toEqual([`sha256-${sha256(A)}`]);
    expect(recs.find((r) => r.modelsDir === b.models)?.keys).toEqual([`sha256-${sha256(B)}`]);
    // No grace at all: only the references protect the blobs.
    for (let i = 0; i < 2; i++) {
      const gc = await runCli(['gc', '--grace-period', '0', '--json'], b.env());
      expect(gc.code).toBe(0);
      expect((JSON.parse(gc.stdout) as { removed: unknown[] }).removed).toEqual([]);
    }
    expect(await exists(blob(store, A))).toBe(true);
    expect(await exists(blob(store, B))).toBe(true);
    // A's next sync finds its blob where it was: nothing fetched again.
    const before = web.requests.length;
    const again = await runCli(['sync'], a.env({ MODELSYNC_LOG_LEVEL: 'warn' }));
    expect(again.code).toBe(0);
    expect(web.requests.length).toBe(before);
    expect(await fileSha256(path.join(a.models, 'checkpoints/a.gguf'))).toBe(sha256(A));
    expect(leakedSecrets(again.stdout, again.stderr)).toEqual([]);
  });

  it('a record written before (one id per state dir) keeps working: its install takes the id over, the other install gets its own', async () => {
    const { a, b, store } = await twoInstalls();
    expect((await runCli(['sync'], a.env())).code).toBe(0);
    // Make the state DB and the store look as the previous version left them: one id in
    // `meta`, no per-install identity, and its record in the store.
    const legacy = '0123456789abcdef';
    const dbFile = path.join(sb.state, 'state.db');
    const conn = new Database(dbFile);
    conn.exec('DELETE FROM identities');
    conn.prepare("INSERT OR REPLACE INTO meta VALUES ('node_id', ?)").run(legacy);
    conn.close();
    const refs = path.join(store, 'refs');
    for (const n of await readdir(refs)) await rm(path.join(refs, n));
    await writeFile(path.join(refs, `${legacy}.json`), JSON.stringify({ node: legacy, host: 'h', manifest: a.manifest, updatedAt: 1, keys: [`sha256-${sha256(A)}`, 'sha256-' + 'ab'.repeat(32)] }));

    expect((await runCli(['sync'], a.env())).code).toBe(0);
    let recs = await records(store);
    expect(recs.map((r) => r.node)).toEqual([legacy]);
    // Rewritten by its install after a complete sync: the stale key is gone.
    expect(recs[0]?.keys).toEqual([`sha256-${sha256(A)}`]);
    expect(recs[0]?.modelsDir).toBe(a.models);

    expect((await runCli(['sync'], b.env())).code).toBe(0);
    recs = await records(store);
    expect(recs).toHaveLength(2);
    expect(recs.find((r) => r.node === legacy)?.keys).toEqual([`sha256-${sha256(A)}`]);
    expect(recs.find((r) => r.node !== legacy)?.modelsDir).toBe(b.models);
  });

  it('in-process: one id per models dir and store, kept across opens; the old id is taken over once per store', async () => {
    sb = await sandbox();
    const dbFile = path.join(sb.state, 'state.db');
    StateDb.open(sb.state).close();
    const conn = new Database(dbFile);
    conn.prepare("INSERT OR REPLACE INTO meta VALUES ('node_id', ?)").run('fedcba9876543210');
    conn.close();
    const db = StateDb.open(sb.state);
    const a1 = db.identity('/m/a', '/s/1');
    const b1 = db.identity('/m/b', '/s/1');
    const a2 = db.identity('/m/a', '/s/2');
    expect(a1).toBe('fedcba9876543210');
    expect(b1).not.toBe(a1);
    // Another store: the old id's record there (if any) belongs to whoever asks first.
    expect(a2).toBe('fedcba9876543210');
    expect(db.identity('/m/b', '/s/2')).not.toBe(a2);
    db.close();
    const reopened = StateDb.open(sb.state);
    expect(reopened.identity('/m/b', '/s/1')).toBe(b1);
    expect(reopened.identity('/m/a', '/s/1')).toBe(a1);
    expect(b1).toMatch(/^[0-9a-f]{16}$/);
    reopened.close();
  });
});
