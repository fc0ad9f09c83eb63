import { readFileSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';
import { withReopen } from '../fs/estale.js';

/** The owner file of a lease (or claim): who holds it, and whether that holder died here. */

export type Owner = { state: 'absent' } | { state: 'owned'; token: string; raw: string } | { state: 'unreadable'; raw: string };

/**
 * The lease's owner file, or a claim's own content (a claim is a file at the lease's path).
 * ENOENT means no owner (no lease, or one not yet written).
 */
export async function readOwner(leasePath: string): Promise<Owner> {
  let raw: string;
  try {
    raw = await withReopen(() => readFile(path.join(leasePath, 'owner'), 'utf8'));
  } catch (e) {
    if (errnoCode(e) === 'ENOTDIR') return readClaim(leasePath);
    if (errnoCode(e) === 'ENOENT') return { state: 'absent' };
    throw e;
  }
  return parseOwner(raw);
}

async function readClaim(leasePath: string): Promise<Owner> {
  let raw: string;
  try {
    raw = await withReopen(() => readFile(leasePath, 'utf8'));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR' || errnoCode(e) === 'EISDIR') return { state: 'absent' };
    throw e;
  }
  return parseOwner(raw);
}

function parseOwner(raw: string): Owner {
  try {
    const j = JSON.parse(raw) as { token?: unknown };
    if (typeof j.token === 'string') return { state: 'owned', token: j.token, raw };
  } catch {
    /* a foreign or damaged file: still content whose changes we can watch */
  }
  return { state: 'unreadable', raw };
}

/**
 * Where a pid means something: this machine's boot and this pid namespace. Hostnames repeat
 * (hostNetwork pods share the node's), so a pid is only checked when both match; otherwise the
 * stale timeout decides, as for any remote holder.
 */
export const HERE: string | undefined = (() => {
  try {
    return `${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()}/${readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    return undefined;
  }
})();

export function holderDiedHere(o: Owner): boolean {
  if (o.state !== 'owned' || HERE === undefined) return false;
  let j: { here?: unknown; pid?: unknown };
  try {
    j = JSON.parse(o.raw) as { here?: unknown; pid?: unknown };
  } catch {
    return false;
  }
  if (j.here !== HERE || typeof j.pid !== 'number' || j.pid === process.pid) return false;
  try {
    process.kill(j.pid, 0);
    return false;
  } catch (e) {
    return errnoCode(e) === 'ESRCH';
  }
}

export function contentOf(o: Owner): string {
  return o.state === 'absent' ? '' : o.raw;
}
