import { request as httpRequest } from 'node:http';

/** ComfyUI answers this as soon as its server is up; it is cheap (no model is touched). */
export const HEALTH_PATH = '/system_stats';

/**
 * One GET of `${base}/system_stats`: true on a 2xx within `timeoutMs`. Never throws. A hung
 * server (accepts, never answers) is a false after the timeout, not a wait forever.
 */
export async function probeHealth(base: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  let url: URL;
  try {
    url = new URL(base + HEALTH_PATH);
  } catch {
    return false;
  }
  // node:https (and TLS) only when asked for: loading it costs a warm start ~10 ms.
  const request = url.protocol === 'https:' ? (await import('node:https')).request : httpRequest;
  return new Promise((resolve) => {
    // The child is ours and usually on loopback with a self-signed certificate when it uses TLS:
    // this only asks whether it answers, nothing secret travels.
    const req = request(url, { method: 'GET', agent: false, timeout: timeoutMs, rejectUnauthorized: false, ...(signal ? { signal } : {}) }, (res) => {
      res.resume();
      const ok = (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300;
      res.once('end', () => resolve(ok));
      res.once('error', () => resolve(false));
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', () => resolve(false));
    req.end();
  });
}

/**
 * Where ComfyUI will answer, from its own argv: `--listen [IP[,IP...]]` (bare: all interfaces;
 * absent: 127.0.0.1) and `--port N` (default 8188), `--tls-keyfile` for https. A wildcard
 * address is probed on loopback.
 */
export function comfyUrlFromArgs(args: readonly string[]): string {
  let host = '127.0.0.1';
  let port = '8188';
  let tls = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const next = inline ?? args[i + 1];
    const hasValue = inline !== undefined || (next !== undefined && !next.startsWith('-'));
    if (flag === '--listen') {
      host = hasValue ? (next ?? '').split(',')[0] ?? '' : '0.0.0.0';
      if (hasValue && inline === undefined) i++;
    } else if (flag === '--port' && hasValue) {
      port = next ?? port;
      if (inline === undefined) i++;
    } else if (flag === '--tls-keyfile') {
      tls = true;
    }
  }
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
  if (host === '::') host = '::1';
  const h = host.includes(':') ? `[${host}]` : host;
  return `${tls ? 'https' : 'http'}://${h}:${port}`;
}
