import { ModelsyncError } from '../errors.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import { headerValue, httpRequest, statusError } from '../transfer/http.js';
import { RateFloor, type RateRule } from '../transfer/rate-floor.js';
import { readText } from '../transfer/read-text.js';
import { withRetry, type RetryPolicy } from '../transfer/retry.js';
import { parseCivitaiVersion, type CivitaiVersion } from './civitai-version.js';

/** A version's answer carries its preview images' metadata too; anything past this is not one. */
const MAX_ANSWER = 8 * 1024 * 1024;

export interface CivitaiApiOptions {
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly idleTimeoutMs: number;
  readonly proxies: ProxySettings;
  readonly connections: ConnectionBudget;
  readonly policy: RetryPolicy;
  /** The minimum rate an answer's body must keep (MODELSYNC_MIN_RATE), as every transfer's. */
  readonly rate: RateRule;
}

/**
 * `GET /api/v1/model-versions/{id}`, retried like any transfer (429 with Retry-After honoured up
 * to the cap, 5xx, network failures), the answer validated (civitai-version.ts). The token goes
 * to the endpoint's host only: httpRequest drops it if the API redirects anywhere else. The body
 * is held to the minimum rate (an answer trickled a byte at a time never trips the idle timeout,
 * and would hold a sync, and `run`'s start, for hours).
 */
export async function fetchCivitaiVersion(o: CivitaiApiOptions, versionId: number, uri: string, signal: AbortSignal): Promise<CivitaiVersion> {
  const url = `${o.endpoint}/api/v1/model-versions/${versionId}`;
  return withRetry(
    async () => {
      const floor = new RateFloor(o.rate, signal);
      try {
        return await askVersion(o, url, versionId, uri, floor);
      } catch (e) {
        throw floor.tripped ?? e;
      } finally {
        floor.stop();
      }
    },
    o.policy,
    { signal },
  );
}

async function askVersion(o: CivitaiApiOptions, url: string, versionId: number, uri: string, floor: RateFloor): Promise<CivitaiVersion> {
  const res = await httpRequest({
    url,
    authorization: o.token === undefined ? undefined : `Bearer ${o.token}`,
    headers: { accept: 'application/json' },
    idleTimeoutMs: o.idleTimeoutMs,
    signal: floor.signal,
    proxies: o.proxies,
    connections: o.connections,
  });
  if (res.status === 404) {
    res.body.discard();
    throw new ModelsyncError('E_NOT_FOUND', `Civitai has no model version ${versionId} (deleted, unpublished, or never there)`, { url: uri, status: 404 });
  }
  if (res.status === 401 || res.status === 403) {
    res.body.discard();
    const hint = o.token === undefined ? 'set CIVITAI_TOKEN' : 'check that CIVITAI_TOKEN is valid';
    throw new ModelsyncError('E_AUTH', `Civitai refused to describe version ${versionId} (HTTP ${res.status}): ${hint}`, { url: uri, status: res.status });
  }
  if (res.status !== 200) throw statusError(res, `Civitai's API for version ${versionId}`);
  const type = headerValue(res.headers, 'content-type') ?? '';
  if (!type.includes('json')) {
    res.body.discard();
    // Cloudflare's browser check, a maintenance page: retried, as the site means it to be.
    throw new ModelsyncError('E_HTTP', `Civitai's API answered version ${versionId} with ${type.split(';')[0] || 'no content type'}, not JSON (a browser check or a maintenance page?)`, { url: uri, retryable: true });
  }
  floor.start(new URL(res.url).host);
  const { text, overflow } = await readText(res.body, MAX_ANSWER, (n) => floor.count(n));
  if (overflow) throw new ModelsyncError('E_HTTP', `Civitai's answer for version ${versionId} is over ${MAX_ANSWER} bytes`, { url: uri });
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new ModelsyncError('E_HTTP', `Civitai's API answered version ${versionId} with JSON that does not parse`, { url: uri, retryable: true });
  }
  const v = parseCivitaiVersion(data, versionId);
  if (typeof v === 'string') throw new ModelsyncError('E_HTTP', `Civitai's answer for version ${versionId} is not usable: ${v}`, { url: uri });
  return v;
}
