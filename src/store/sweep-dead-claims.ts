import { lstat, readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import type { StoreLayout } from './layout.js';
import { holderDiedHere, readOwner } from './lease-owner.js';

/**
 * Clear what syncs that died on this machine left of their small-blob work: their claims (hard
 * links to their owner file), their owner file, and their small partials, which nobody adopts.
 * Without this a crash leaves them in STORE/tmp until gc's day-old sweep. A partial above
 * `smallMax` bytes may belong to a large blob, whose partials are adopted on resume: kept.
 * Holders that died on other machines are gc's (their death cannot be proved from here).
 */
export async function sweepDeadClaims(store: StoreLayout, smallMax: number): Promise<void> {
  const names = await readdir(store.at.tmp).catch(() => [] as string[]);
  const dead = new Map<string, bigint>();
  for (const n of names) {
    const m = /^claim-owner-(.+)-\d+$/.exec(n);
    if (!m?.[1]) continue;
    const file = path.join(store.at.tmp, n);
    if (!holderDiedHere(await readOwner(file).catch(() => ({ state: 'absent' as const })))) continue;
    const st = await stat(file, { bigint: true }).catch(() => undefined);
    if (st) dead.set(m[1], st.ino);
  }
  if (dead.size === 0) return;
  const inos = new Set(dead.values());
  for (const n of await readdir(store.at.leases).catch(() => [] as string[])) {
    const p = path.join(store.at.leases, n);
    const st = await lstat(p, { bigint: true }).catch(() => undefined);
    // Only a name that is the dead owner's file itself: a live claim is a link to a live owner.
    if (st?.isFile() && inos.has(st.ino)) await unlink(p).catch(ignoreGone);
  }
  for (const n of names) {
    const m = /^(.+)\.(.+)-\d+\.part$/.exec(n);
    if (!m?.[2] || !dead.has(m[2])) continue;
    const part = path.join(store.at.tmp, n);
    const st = await stat(part).catch(() => undefined);
    if (!st || st.size > smallMax) continue;
    await unlink(part).catch(ignoreGone);
    await unlink(part.replace(/\.part$/, '.journal')).catch(ignoreGone);
  }
  for (const [token] of dead) {
    for (const n of names) if (n.startsWith(`claim-owner-${token}-`)) await unlink(path.join(store.at.tmp, n)).catch(ignoreGone);
  }
}

function ignoreGone(e: unknown): void {
  if (errnoCode(e) !== 'ENOENT') throw e;
}
