/**
 * A fresh partial (DownloadParams.fresh: a small blob's, named for one attempt and never resumed):
 * downloadToPart neither reads nor keeps a journal for it. A real byte server on 127.0.0.1 and
 * real files in a temp dir.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/log.js';
import { HttpsSource } from '../src/sources/https.js';
import { ConnectionBudget } from '../src/transfer/budget.js';
import { downloadToPart, type DownloadParams } from '../src/transfer/download.js';
import { writeJournal } from '../src/transfer/journal.js';
import { TransferBudget } from '../src/transfer/transfer-budget.js';
import { startByteServer, type ByteServer } from './support/byte-server.js';

let dir: string | undefined;
let server: ByteServer | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const BODY = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 251));
const HEX = createHash('sha256').update(BODY).digest('hex');

/** A partial and journal at the download's paths, as a resumable download would have left them: half of BODY, the rest zeros. */
async function planted(): Promise<{ part: string; journal: string; version: string }> {
  dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-fresh-'));
  const part = path.join(dir, 'x.part');
  const journal = path.join(dir, 'x.journal');
  const version = `sha256:${HEX}`;
  const half = Buffer.alloc(BODY.length);
  BODY.copy(half, 0, 0, 150_000);
  await writeFile(part, half);
  await writeJournal(journal, { v: 1, version, size: BODY.length, chunkSize: 4 * 1024 * 1024, written: [150_000] });
  return { part, journal, version };
}

async function params(paths: { part: string; journal: string; version: string }, fresh: boolean): Promise<DownloadParams> {
  server = await startByteServer({ files: { '/f.bin': BODY } });
  const connections = new ConnectionBudget(4);
  const source = new HttpsSource({ tokens: new Map(), idleTimeoutMs: 10_000, proxies: { https: undefined, http: undefined, noProxy: '' }, connections });
  const url = `${server.url}/f.bin`;
  const file = { key: { algo: 'sha256', hex: HEX } as const, size: BODY.length, version: paths.version, uri: url, locator: { kind: 'https', url, uri: url } };
  return {
    file,
    source,
    partPath: paths.part,
    journalPath: paths.journal,
    maxChunkSize: 64 * 1024 * 1024,
    connections,
    policy: { attempts: 3, baseMs: 10, maxWaitMs: 100 },
    budget: new TransferBudget(url, BODY.length, { fetchRatio: 4, minRate: 0, windowMs: 1000, maxUnsized: 1e9 }),
    signal: new AbortController().signal,
    log: silentLogger(),
    fresh,
  };
}

describe('downloadToPart with a fresh partial', () => {
  it('resumes from a journal at its paths when not fresh (the control)', async () => {
    const paths = await planted();
    const d = await downloadToPart(await params(paths, false));
    expect(d.hex).toBe(HEX);
    expect(d.resumedFrom).toBe(150_000);
    expect(d.readOnly).toBe(false);
    expect((await stat(paths.part)).mode & 0o777).toBe(0o644);
  });

  it('when fresh, reads no journal: every byte is fetched into a new partial, no journal is left, and the partial ends read-only', async () => {
    const paths = await planted();
    const d = await downloadToPart(await params(paths, true));
    expect(d.hex).toBe(HEX);
    expect({ resumedFrom: d.resumedFrom, fetched: d.fetched }).toEqual({ resumedFrom: 0, fetched: BODY.length });
    expect((await readFile(paths.part)).equals(BODY)).toBe(true);
    // Read-only already, through the descriptor that wrote it: the commit need not open it again.
    expect(d.readOnly).toBe(true);
    expect((await stat(paths.part)).mode & 0o777).toBe(0o444);
    // The planted journal is the only one: nothing was written beside it.
    expect((await readdir(dir as string)).sort()).toEqual(['x.journal', 'x.part']);
  });
});
