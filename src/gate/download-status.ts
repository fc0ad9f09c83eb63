import type { GateModelOutcome } from './models-port.js';

/**
 * The frontend's DownloadStatus (comfyui-downloads.md), every field of it, kept from the
 * on-demand service's states: queued -> queued, downloading -> active, verifying -> verifying,
 * ready -> completed, failed -> failed. Part of the experimental --gate-frontend-downloads.
 */

export type Status = 'queued' | 'active' | 'paused' | 'verifying' | 'completed' | 'failed' | 'cancelled';

export interface DownloadStatus {
  download_id: string;
  model_id: string;
  url: string;
  status: Status;
  priority: number;
  total_bytes: number | null;
  bytes_done: number;
  progress: number | null;
  speed_bps: number | null;
  eta_seconds: number | null;
  segments: { idx: number; bytes_done: number; length: number }[] | null;
  error: string | null;
  created_at: number;
  updated_at: number;
}

export interface Download {
  readonly status: DownloadStatus;
  readonly job: string;
}

export function newStatus(id: string, modelId: string, url: string, priority: number): DownloadStatus {
  const now = Date.now() / 1000;
  return { download_id: id, model_id: modelId, url, status: 'queued', priority, total_bytes: null, bytes_done: 0, progress: null, speed_bps: null, eta_seconds: null, segments: null, error: null, created_at: now, updated_at: now };
}

/** Move `s` on to the service's `state` and numbers; false when nothing changed (it had ended). */
export function advance(s: DownloadStatus, state: string, m: GateModelOutcome): boolean {
  const next: Status | undefined = state === 'queued' ? 'queued' : state === 'downloading' ? 'active' : state === 'verifying' ? 'verifying' : state === 'ready' ? 'completed' : state === 'failed' ? 'failed' : undefined;
  if (next === undefined || finished(s.status)) return false;
  s.status = next;
  s.total_bytes = m.total ?? s.total_bytes;
  s.bytes_done = next === 'completed' ? (m.total ?? m.bytes) : m.bytes;
  s.progress = next === 'completed' ? 1 : s.total_bytes ? Math.min(1, s.bytes_done / s.total_bytes) : null;
  s.speed_bps = next === 'active' ? m.speed : null;
  s.eta_seconds = next === 'active' && m.speed > 0 && s.total_bytes !== null ? Math.max(0, (s.total_bytes - s.bytes_done) / m.speed) : null;
  s.error = next === 'failed' ? (m.error?.message ?? 'failed') : null;
  s.updated_at = Date.now() / 1000;
  return true;
}

export function finished(s: Status): boolean {
  return s === 'completed' || s === 'failed' || s === 'cancelled';
}

/** The server's feature_flags with `server_side_model_downloads: true`; any other message as it is. */
export function withDownloadsFlag(text: string): string {
  if (!text.includes('"feature_flags"') || text.length > 1024 * 1024) return text;
  try {
    const msg = JSON.parse(text) as { type?: unknown; data?: unknown };
    if (msg.type !== 'feature_flags' || msg.data === null || typeof msg.data !== 'object' || Array.isArray(msg.data)) return text;
    return JSON.stringify({ ...msg, data: { ...msg.data, server_side_model_downloads: true } });
  } catch {
    return text;
  }
}
