import { hostname } from 'node:os';
import { link, lstat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { systemClock, type Clock } from '../clock.js';
import { errnoCode } from '../errors.js';
import { NO_HARD_LINKS } from './blobs.js';
import { HERE } from './lease-owner.js';

/**
 * Blobs of at most this size are fetched under a claim, not a lease (see LeaseOptions.claim),
 * into a partial of their own that nobody adopts: a small file is fetched again rather than
 * resumed. A lease's heartbeat, fence and checked release cost about 25 file operations on the
 * shared volume per file, against one request; a claim costs 3. A constant, not a setting:
 * every node on a volume must agree on which blobs have leases and which partials are adoptable.
 */
export const SMALL_BLOB_BYTES = 1024 * 1024;

/**
 * A claim's age, to gc on any node, is its inode's mtime: the owner file's. A claim lives as long
 * as one small download, but a sync can run for days; past this age the next claim links to a
 * new owner file, so no claim ever looks older than this plus one download to gc's day-old sweep
 * of STORE/tmp (MODELSYNC_GC_TMP_MAX_AGE). The old name goes; claims on it are names of their own.
 */
export const OWNER_FILE_MAX_AGE_MS = 10 * 60_000;

/**
 * The owner side of claims (see LeaseOptions.claim): one owner file per sync in STORE/tmp at a
 * time, each written once, and a claim is a hard link to it at the lease's name. A link is atomic (EEXIST
 * when anyone holds the name, as mkdir for a lease), and it makes a name, not a file: creating
 * files and folders is what costs on a shared volume (a server round trip) and on many local
 * disks, and a small file's download already creates one. Readers see the same owner record as
 * in a lease's `owner` file (readOwner reads a claim file itself), so waiting, staleness and the
 * takeover of a holder that died on this machine work alike. Where the file system has no hard
 * links, the claim is written in place with O_EXCL instead.
 */
export class ClaimOwner {
  private made: Promise<{ path: string; ino: bigint }> | undefined;
  private madeAt = 0;
  private seq = 0;

  constructor(
    private readonly dir: string,
    private readonly token: string,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Take `target`; undefined when someone holds it. The inode identifies our claim later. */
  async claim(target: string): Promise<{ ino: bigint } | undefined> {
    for (let attempt = 0; ; attempt++) {
      const own = await this.file();
      try {
        await link(own.path, target);
        return { ino: own.ino };
      } catch (e) {
        const code = errnoCode(e) ?? '';
        if (code === 'EEXIST') return undefined;
        // Our owner file's name is gone (gc clears old files in tmp): write another.
        if (code === 'ENOENT' && attempt === 0) {
          this.made = undefined;
          continue;
        }
        if (NO_HARD_LINKS.has(code)) return this.claimInPlace(target);
        throw e;
      }
    }
  }

  /** Drop the claim at `target` if it is still ours (a peer that broke it may have its own there). */
  async unclaim(target: string, ino: bigint): Promise<void> {
    const st = await lstat(target, { bigint: true }).catch(() => undefined);
    if (st?.ino === ino) await unlink(target).catch(() => undefined);
  }

  /** The owner file's name goes (claims still standing are names of their own). */
  async dispose(): Promise<void> {
    const made = this.made;
    this.made = undefined;
    const own = await made?.catch(() => undefined);
    if (own) await unlink(own.path).catch(() => undefined);
  }

  private file(): Promise<{ path: string; ino: bigint }> {
    const retired = this.made && this.clock.now() - this.madeAt >= OWNER_FILE_MAX_AGE_MS ? this.dispose() : undefined;
    if (!this.made) {
      this.madeAt = this.clock.now();
      const p = (async () => {
        await retired;
        // O_EXCL: the name is predictable from the token (every partial shows it), so something
        // may already be planted there; a write must never go through it. Such a name is skipped.
        for (let tries = 0; ; tries++) {
          const file = path.join(this.dir, `claim-owner-${this.token}-${++this.seq}`);
          try {
            await writeFile(file, this.record(), { flag: 'wx' });
          } catch (e) {
            if (errnoCode(e) === 'EEXIST' && tries < 3) continue;
            throw e;
          }
          return { path: file, ino: (await lstat(file, { bigint: true })).ino };
        }
      })();
      this.made = p;
      p.catch(() => {
        if (this.made === p) this.made = undefined;
      });
    }
    return this.made;
  }

  private async claimInPlace(target: string): Promise<{ ino: bigint } | undefined> {
    try {
      await writeFile(target, this.record(), { flag: 'wx' });
    } catch (e) {
      if (errnoCode(e) === 'EEXIST') return undefined;
      throw e;
    }
    return { ino: (await lstat(target, { bigint: true })).ino };
  }

  private record(): string {
    // `at` is for people reading the file; staleness is judged on content changes alone.
    return JSON.stringify({ token: this.token, claim: true, host: hostname(), pid: process.pid, here: HERE, at: new Date().toISOString() });
  }
}
