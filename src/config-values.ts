import { ModelsyncError } from './errors.js';
import { MIN_CHUNK_SIZE } from './transfer/chunks.js';

/** Parsers for one setting's text (a flag or an env var): each names the setting when it refuses. */

const MiB = 1024 * 1024;

export function intSetting(name: string, raw: string | undefined, dflt: number, min: number): number {
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    throw new ModelsyncError('E_USAGE', `${name} must be an integer >= ${min}, got "${raw}"`);
  }
  return n;
}

export function sizeSetting(name: string, raw: string | undefined, dflt: number): number {
  const n = bytesSetting(name, raw, dflt);
  if (n < MIN_CHUNK_SIZE) throw new ModelsyncError('E_USAGE', `${name} must be at least 64K`);
  return n;
}

/** A number of bytes: digits with an optional K, M, G or T (powers of 1024), "B" or "iB" allowed. */
export function bytesSetting(name: string, raw: string | undefined, dflt: number): number {
  if (raw === undefined || raw === '') return dflt;
  const m = /^(\d{1,15})\s*([kKmMgGtT]?)i?[bB]?$/.exec(raw.trim());
  if (!m) throw new ModelsyncError('E_USAGE', `${name} must be a size such as 16M, got "${raw}"`);
  const unit = (m[2] ?? '').toLowerCase();
  const mult = unit === 'k' ? 1024 : unit === 'm' ? MiB : unit === 'g' ? 1024 * MiB : unit === 't' ? 1024 * 1024 * MiB : 1;
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n)) throw new ModelsyncError('E_USAGE', `${name} is too large, got "${raw}"`);
  return n;
}

/** A multiple (1.5, 3): a number of at least `min`. */
export function ratioSetting(name: string, raw: string | undefined, dflt: number, min: number): number {
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw.trim()) || !Number.isFinite(n) || n < min) throw new ModelsyncError('E_USAGE', `${name} must be a number >= ${min}, got "${raw}"`);
  return n;
}

export function secondsSetting(name: string, raw: string | undefined, dflt: number): number {
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new ModelsyncError('E_USAGE', `${name} must be a number of seconds >= 0, got "${raw}"`);
  return Math.round(n * 1000);
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** pino's levels; anything else would only fail later, inside pino, as an internal error. */
export function logLevelSetting(name: string, raw: string | undefined, dflt: string): string {
  if (raw === undefined || raw === '') return dflt;
  const level = raw.trim().toLowerCase();
  if (!LOG_LEVELS.includes(level)) throw new ModelsyncError('E_USAGE', `${name} must be one of ${LOG_LEVELS.join(', ')}, got "${raw}"`);
  return level;
}

/**
 * A bearer token we check or send: long enough not to be guessed over the network, and printable
 * ASCII without spaces, so that it fits an Authorization header as it is. Empty: none.
 */
export function tokenSetting(name: string, raw: string | undefined): string | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  const token = raw.trim();
  // The value itself is never quoted: it is a secret, even when it is a bad one.
  if (!/^[\x21-\x7e]+$/.test(token)) throw new ModelsyncError('E_USAGE', `${name} must be printable ASCII without spaces (e.g. the output of "openssl rand -hex 32")`);
  if (token.length < 16) throw new ModelsyncError('E_USAGE', `${name} must be at least 16 characters long (e.g. the output of "openssl rand -hex 32"), got ${token.length}`);
  return token;
}

export function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.toLowerCase());
}

export function parseHostPort(raw: string, name = '--control'): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(raw);
  if (!m) throw new ModelsyncError('E_USAGE', `${name} must be HOST:PORT, got "${raw}"`);
  const port = Number(m[2]);
  if (port > 65535) throw new ModelsyncError('E_USAGE', `${name} port out of range: ${port}`);
  return { host: (m[1] ?? '').replace(/^\[|\]$/g, ''), port };
}
