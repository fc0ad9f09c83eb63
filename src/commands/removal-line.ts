import { fmt } from '../fmt.js';
import type { Removal } from '../sync/removed.js';

/**
 * One line about a dest the manifest no longer names. `when`: undefined for what a sync did,
 * else when it will happen ('next sync'): plan and status say what would be done.
 */
export function removalLine(r: Removal, when?: string): string {
  const size = ` (${fmt(r.size)})`;
  if (r.state === 'unpublished') return when === undefined ? `unpublished ${r.dest}${size}: no longer in the manifest` : `unpublish  ${r.dest}${size}: no longer in the manifest, removed by the ${when}`;
  if (r.state === 'user-file') return `left       ${r.dest}: no longer in the manifest, but the file there is not the one modelsync published${when === undefined ? '' : ' (the next sync leaves it alone)'}`;
  return `kept       ${r.dest}${size}: no longer in the manifest, kept: ${r.reason ?? 'in use'}`;
}
