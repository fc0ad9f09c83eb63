import { statfs } from 'node:fs/promises';
import { ModelsyncError } from '../errors.js';
import { fmt } from '../fmt.js';

/** What a stream of unknown size may never take from its volume: a twentieth of it stays free. */
const KEEP_FREE = 1 / 20;

/** How many bytes a download that no metadata sized may write, and which limit that is. */
export interface Room {
  readonly bytes: number;
  readonly by: 'cap' | 'free';
}

/**
 * The room for a stream whose size only the server tells (a Content-Length, a Content-Range
 * total) or nobody does: at most `cap` (MODELSYNC_MAX_UNSIZED), and never so much that the
 * volume `dir` is on (shared, often) falls under 5 % free. The plan's free-space check counts
 * only sizes known before the download; this is the bound for the others, checked before the
 * first byte and enforced on every byte, so such a stream fails clearly and never fills the disk.
 */
export async function roomForUnsized(dir: string, cap: number): Promise<Room> {
  const fs = await statfs(dir);
  const free = Math.max(0, Math.floor(fs.bavail * fs.bsize - fs.blocks * fs.bsize * KEEP_FREE));
  return free < cap ? { bytes: free, by: 'free' } : { bytes: cap, by: 'cap' };
}

/**
 * The error for a stream past its room; `said` is the size the server announced, if any. Past
 * the cap it is E_TOO_LARGE; past the free space it is E_NO_SPACE, as when the plan cannot fit.
 */
export function tooLarge(uri: string, room: Room, said: number | undefined): ModelsyncError {
  const limit = room.by === 'cap' ? `MODELSYNC_MAX_UNSIZED (${fmt(room.bytes)})` : `the ${fmt(room.bytes)} that keep its volume 5 % free`;
  const what = said === undefined ? `gives no size, and its stream ran past ${limit}` : `says it is ${fmt(said)}, more than ${limit}`;
  const hint = room.by === 'cap' ? 'give the entry a size: (modelsync lock records it)' : 'free some space';
  return new ModelsyncError(room.by === 'cap' ? 'E_TOO_LARGE' : 'E_NO_SPACE', `${uri}: the server ${what}; ${hint}`, { url: uri });
}
