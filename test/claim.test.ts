/**
 * Claims (LeaseOptions.claim): the small-blob form of a lease, a hard link to one owner file per
 * sync at the lease's path. Real files; the staleness cases in virtual time, as in lease.test.ts.
 */
import { spawn } from 'node:child_process';
import { link, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../src/clock.js';
import { collectGarbage } from '../src/store/gc.js';
import { ClaimOwner, OWNER_FILE_MAX_AGE_MS, SMALL_BLOB_BYTES } from '../src/store/claim.js';
import { sweepDeadClaims } from '../src/store/sweep-dead-claims.js';
import { HERE } from '../src/store/lease-owner.js';
import { Lease, acquireOrWait, type LeaseOptions } from '../src/store/lease.js';
import { storeLayout, type StoreLayout } from '../src/store/layout.js';
import { VirtualTime } from './support/virtual-time.js';

const STALE = 1000;
const NAME = `sha256-${'cd'.repeat(32)}`;

let root: string;
let store: StoreLayout;
let owners: ClaimOwner[] = [];

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'modelsync-claim-'));
  store = storeLayout(root);
  await Promise.all([store.tmp, store.leases, store.blobs, store.refs].map((d) => mkdir(d, { recursive: true })));
  owners = [];
});

afterEach(async () => {
  await Promise.allSettled(owners.map((o) => o.dispose()));
  await rm(root, { recursive: true, force: true });
});

function claimOpts(token: string, clock?: Clock): LeaseOptions {
  const claim = new ClaimOwner(store.tmp, token);
  owners.push(claim);
  return { dir: store.leases, name: NAME, token, staleMs: STALE, heartbeatMs: 100, claim, ...(clock ? { clock } : {}) };
}

async function claimed(): Promise<{ token: string } | undefined> {
  try {
    return JSON.parse(await readFile(path.join(store.leases, NAME), 'utf8')) as { token: string };
  } catch {
    return undefined;
  }
}

/** A pid that is certainly dead: a child that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => child.once('exit', r));
  return child.pid as number;
}

describe('claims', () => {
  it('one holder at a time; many claims share one owner file; release frees the name at once', async () => {
    const a = claimOpts('aaaa');
    const mine = await Lease.tryAcquire(a);
    expect(mine).toBeInstanceOf(Lease);
    expect((await claimed())?.token).toBe('aaaa');
    expect(await Lease.tryAcquire(claimOpts('bbbb'))).toBeUndefined();
    const other = await Lease.tryAcquire({ ...a, name: `sha256-${'ef'.repeat(32)}` });
    // Two claims, one owner file in tmp: a claim is a name, not a new file.
    expect((await readdir(store.tmp)).filter((n) => n.startsWith('claim-owner-aaaa-'))).toHaveLength(1);
    const ino = (await stat(path.join(store.leases, NAME))).ino;
    expect((await stat(path.join(store.leases, `sha256-${'ef'.repeat(32)}`))).ino).toBe(ino);
    await mine?.release();
    await other?.release();
    expect(await readdir(store.leases)).toEqual([]);
    expect(await Lease.tryAcquire(claimOpts('bbbb'))).toBeInstanceOf(Lease);
  });

  it('a long sync links new claims to a fresh owner file, so gc never dates a new claim by the sync start', async () => {
    const time = new VirtualTime();
    const owner = new ClaimOwner(store.tmp, 'long1234', time.clock());
    owners.push(owner);
    const first = await owner.claim(path.join(store.leases, NAME));
    const sameHour = await owner.claim(path.join(store.leases, `sha256-${'ef'.repeat(32)}`));
    expect(sameHour?.ino).toBe(first?.ino);
    time.jump(OWNER_FILE_MAX_AGE_MS);
    const later = await owner.claim(path.join(store.leases, `sha256-${'01'.repeat(32)}`));
    expect(later?.ino).not.toBe(first?.ino);
    // One owner name at a time; the earlier claims stand on their own names.
    expect((await readdir(store.tmp)).filter((n) => n.startsWith('claim-owner-long1234-'))).toEqual(['claim-owner-long1234-2']);
    expect((await readdir(store.leases)).sort()).toHaveLength(3);
    expect((await stat(path.join(store.leases, NAME))).ino).toBe(Number(first?.ino));
  });

  it("a release leaves a peer's claim alone (one that broke ours and took the name)", async () => {
    const mine = await Lease.tryAcquire(claimOpts('aaaa'));
    // A peer judged ours stale: moved it away and made its own.
    await rm(path.join(store.leases, NAME));
    expect(await Lease.tryAcquire(claimOpts('bbbb'))).toBeInstanceOf(Lease);
    await mine?.release();
    expect((await claimed())?.token).toBe('bbbb');
  });

  it('the owner file may go (dispose, gc of old temps) while claims stand; the next claim writes another', async () => {
    const a = claimOpts('aaaa');
    const first = await Lease.tryAcquire(a);
    await a.claim?.dispose();
    expect((await readdir(store.tmp)).filter((n) => n.startsWith('claim-owner-'))).toEqual([]);
    expect((await claimed())?.token).toBe('aaaa');
    const second = await Lease.tryAcquire({ ...a, name: `sha256-${'ef'.repeat(32)}` });
    expect(second).toBeInstanceOf(Lease);
    await first?.release();
    await second?.release();
    expect(await readdir(store.leases)).toEqual([]);
  });

  it('a claim whose holder died on this machine is taken over at once; a remote one after staleMs of the observer clock', async () => {
    // Died here: same boot and pid namespace, pid gone. No wait at all (staleMs is never reached).
    await writeFile(path.join(store.leases, NAME), JSON.stringify({ token: 'dead', claim: true, pid: await deadPid(), here: HERE }));
    const time = new VirtualTime();
    const got = await acquireOrWait(claimOpts('cccc', time.clock()), () => Promise.resolve(false), new AbortController().signal);
    expect(got).toBeInstanceOf(Lease);
    expect((await claimed())?.token).toBe('cccc');
    if (got instanceof Lease) await got.release();

    // Elsewhere: its content never changes (a claim has no heartbeat); broken after staleMs.
    await writeFile(path.join(store.leases, NAME), JSON.stringify({ token: 'remote', claim: true, pid: 1, here: 'another-machine' }));
    let result: Lease | 'done' | undefined;
    void acquireOrWait(claimOpts('dddd', time.clock(7e9)), () => Promise.resolve(false), new AbortController().signal).then((r) => (result = r));
    await time.advance(STALE - 300);
    expect(result).toBeUndefined();
    await time.advanceUntil(() => result !== undefined, STALE * 3);
    expect(result).toBeInstanceOf(Lease);
    expect((await claimed())?.token).toBe('dddd');
    if (result instanceof Lease) await result.release();
  });

  it('gc reads a claim as a lease: its blob is in flight, and the claim is not touched while young', async () => {
    const hex = 'cd'.repeat(32);
    const blob = path.join(store.blobs, 'sha256', hex.slice(0, 2), hex);
    await mkdir(path.dirname(blob), { recursive: true });
    await writeFile(blob, 'bytes');
    await writeFile(path.join(store.refs, 'node.json'), JSON.stringify({ node: 'node', keys: [] }));
    const held = await Lease.tryAcquire(claimOpts('aaaa'));
    const report = await collectGarbage({ store, graceMs: 0, refsMaxAgeMs: 86_400_000, tmpMaxAgeMs: 86_400_000, dryRun: false });
    expect(report.inFlight).toEqual([{ key: NAME, size: 5, why: 'lease' }]);
    expect(report.removed).toEqual([]);
    expect((await claimed())?.token).toBe('aaaa');
    await held?.release();
  });

  it('a sync that died here leaves nothing behind once another has run: claims, owner file, small partials (large ones wait for adoption)', async () => {
    const owner = path.join(store.tmp, 'claim-owner-dead0123-1');
    await writeFile(owner, JSON.stringify({ token: 'dead0123', claim: true, pid: await deadPid(), here: HERE }));
    await link(owner, path.join(store.leases, NAME));
    const small = path.join(store.tmp, `${NAME}.dead0123-2`);
    const large = path.join(store.tmp, `sha256-${'ef'.repeat(32)}.dead0123-3`);
    await writeFile(`${small}.part`, Buffer.alloc(1000));
    await writeFile(`${small}.journal`, '{}');
    await writeFile(`${large}.part`, Buffer.alloc(SMALL_BLOB_BYTES + 1));
    await writeFile(`${large}.journal`, '{}');
    // A live sync's claim and owner file (this process) stay.
    const live = new ClaimOwner(store.tmp, 'live4567');
    owners.push(live);
    await live.claim(path.join(store.leases, `sha256-${'01'.repeat(32)}`));
    await sweepDeadClaims(store, SMALL_BLOB_BYTES);
    expect((await readdir(store.tmp)).sort()).toEqual([`${path.basename(large)}.journal`, `${path.basename(large)}.part`, 'claim-owner-live4567-1'].sort());
    expect(await readdir(store.leases)).toEqual([`sha256-${'01'.repeat(32)}`]);
  });
});
