import type { DaemonState, EntryStatus } from './state.js';

/**
 * Why the daemon is not ready, as a sentence for /readyz and /status ("ComfyUI is restarting
 * after exit code 137, next start in 2 s"). `detail`: the caller may see model names (no token
 * is configured, or it sent it); probes without the token get counts only.
 */
export function notReadySentence(s: DaemonState, detail: boolean): string {
  if (s.mode === 'service' || s.timeline.comfySpawned === undefined) {
    const waiting = [...s.entries.values()].filter((e) => e.required && !e.verified);
    const before = s.mode === 'service' ? '' : ' before ComfyUI starts';
    if (waiting.length === 0) return s.mode === 'service' ? 'the manifest is not loaded yet' : 'ComfyUI has not been started yet';
    const failed = waiting.filter((e) => e.state === 'failed');
    if (failed.length > 0) return `${plural(failed.length, 'required model')} could not be had${before}${detail ? `: ${names(failed)}` : ''}`;
    return `waiting for ${plural(waiting.length, 'required model')}${before}${detail ? `: ${names(waiting)}` : ''}`;
  }
  const c = s.comfy;
  if (c.phase === 'running') return `${plural(s.gone.length, 'model')} ComfyUI was started with ${s.gone.length === 1 ? 'is' : 'are'} gone from the models dir${detail ? `: ${s.gone.slice(0, 5).join(', ')}${more(s.gone.length)}` : ''}`;
  if (c.phase === 'starting') return `ComfyUI is starting${c.pid === undefined ? '' : ` (pid ${c.pid})`} and does not answer ${c.url ?? 'its URL'}/system_stats yet`;
  if (c.phase === 'unresponsive') return `ComfyUI stopped answering (${c.reason ?? 'health probes went unanswered'}) and is being stopped`;
  if (c.phase === 'backoff') {
    const left = c.nextStartAt === undefined ? undefined : Math.max(0, Math.ceil((Date.parse(c.nextStartAt) - Date.now()) / 1000));
    return `ComfyUI is restarting after ${exitText(s)}${left === undefined ? '' : `, next start in ${left} s`}`;
  }
  if (c.phase === 'stopping') return 'modelsync is stopping ComfyUI';
  if (c.gaveUp) return `modelsync gave up on ComfyUI: ${c.reason ?? 'it kept failing'}, the last start ending with ${exitText(s)}`;
  return `ComfyUI ended with ${exitText(s)} and is not restarted`;
}

function exitText(s: DaemonState): string {
  const e = s.comfy.lastExit;
  if (e === undefined) return 'an exit';
  if (e.unresponsive) return 'it stopped answering';
  if (e.signal !== null) return `signal ${e.signal}`;
  return `exit code ${e.code}`;
}

function names(list: readonly EntryStatus[]): string {
  const shown = list.slice(0, 5).map((e) => (e.state === 'downloading' && e.size ? `${e.dest} (downloading, ${Math.floor((100 * e.bytes) / e.size)}%)` : `${e.dest} (${e.state})`));
  return `${shown.join(', ')}${more(list.length)}`;
}

function more(n: number): string {
  return n > 5 ? `, and ${n - 5} more` : '';
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}
