import { loadControlConfig } from '../config.js';
import { controlRequest, daemonJson } from '../daemon/client.js';
import { fmt } from '../sync/plan.js';
import { print, printJson, type CommandIo } from './common.js';

interface RemoteStatus {
  mode?: string;
  ready?: boolean;
  readiness?: string;
  healthy?: boolean;
  manifest?: { path?: string; error?: string };
  comfyui?: { phase?: string; pid?: number; restarts?: number; degraded?: boolean };
  sync?: { running?: { reason?: string }; last?: { ok?: boolean; finishedAt?: string; reason?: string; removed?: { dest?: string; state?: string; reason?: string }[] } };
  entries?: { dest: string; state: string; verified: boolean; required: boolean; size?: number; bytes?: number; progress?: number; error?: string }[];
}

/**
 * `modelsync status` when a daemon answers on the control address (within a short timeout):
 * its live view, downloads in progress included. Undefined when none answers, so the caller
 * shows the local view instead.
 */
export async function daemonStatus(io: CommandIo): Promise<number | undefined> {
  // Only what reaches the daemon: it knows its own models dir and manifest.
  const config = loadControlConfig(io.flags, io.env);
  const answer = await controlRequest(config, 'GET', '/status', { connectTimeoutMs: 500, answerTimeoutMs: 5000 });
  if (answer === undefined) return undefined;
  const s = daemonJson<RemoteStatus>(answer);
  const entries = s.entries ?? [];
  if (config.json) printJson(io, { daemon: answer.url.replace(/\/status$/, ''), ...s });
  else {
    const child = s.comfyui ? `; ComfyUI ${s.comfyui.phase ?? '?'}${s.comfyui.restarts ? `, ${s.comfyui.restarts} restarts` : ''}${s.comfyui.degraded ? ' (degraded)' : ''}` : '';
    print(io, `daemon at ${answer.url.replace(/\/status$/, '')}: ${s.ready ? 'ready' : `not ready (${s.readiness ?? 'no reason given'})`}${child}`);
    if (s.manifest?.error) print(io, `manifest on disk rejected (the last valid one is in force):\n${s.manifest.error}`);
    for (const e of entries) {
      const progress = !e.verified && e.state === 'downloading' && e.progress !== undefined ? ` ${(e.progress * 100).toFixed(0)}%` : '';
      const size = e.size === undefined ? '' : ` (${fmt(e.size)})`;
      print(io, `${e.state.padEnd(12)} ${e.dest}${size}${progress}${e.required ? '' : ' [optional]'}${e.error ? `: ${e.error}` : ''}`);
    }
    // What the last sync did with dests the manifest no longer names.
    for (const r of s.sync?.last?.removed ?? []) print(io, `${(r.state === 'user-file' ? 'left' : (r.state ?? '?')).padEnd(12)} ${r.dest ?? '?'}: no longer in the manifest${r.reason === undefined ? '' : ` (${r.reason})`}`);
    const sync = s.sync?.running ? `syncing (${s.sync.running.reason ?? ''})` : s.sync?.last ? `last sync ${s.sync.last.ok ? 'ok' : 'had failures'} at ${s.sync.last.finishedAt ?? '?'}` : 'no sync yet';
    print(io, `${entries.filter((e) => e.verified).length}/${entries.length} present and verified; ${sync}`);
  }
  return entries.every((e) => e.verified) ? 0 : 1;
}
