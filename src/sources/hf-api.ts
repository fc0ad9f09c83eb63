import type { HfRef } from '../manifest/types.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import { headerValue, httpRequest } from '../transfer/http.js';
import { RateFloor, type RateRule } from '../transfer/rate-floor.js';

/** A paths-info answer for 2,000 files is ~0.5 MB: anything this large is not an answer. */
const MAX_ANSWER = 64 * 1024 * 1024;

export interface HubApiOptions {
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly idleTimeoutMs: number;
  readonly rate: RateRule;
  readonly proxies: ProxySettings;
  readonly connections: ConnectionBudget;
}

/** The Hub answered an API call with something other than 2xx: its status and X-Error-Code. */
export class HubApiStatus extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: string | undefined,
    url: string,
  ) {
    super(`HTTP ${status} from ${url}`);
  }
}

/**
 * `GET /api/{models|datasets}/{repo}/revision/{rev}?expand=sha`: the answer (its `sha` is the
 * revision's commit; the caller checks it). The same request @huggingface/hub's modelInfo makes,
 * with only the key we read expanded.
 */
export function hubRevision(o: HubApiOptions, ref: HfRef, signal: AbortSignal): Promise<unknown> {
  return hubApi(o, `/api/${ref.repoType}s/${ref.repo}/revision/${encodeURIComponent(ref.revision)}?expand=sha`, undefined, signal);
}

/** `POST /api/{models|datasets}/{repo}/paths-info/{commit}` with `{"paths": [...]}`: the parsed answer, unchecked. */
export function hubPathsInfo(o: HubApiOptions, ref: HfRef, commit: string, paths: readonly string[], signal: AbortSignal): Promise<unknown> {
  return hubApi(o, `/api/${ref.repoType}s/${ref.repo}/paths-info/${encodeURIComponent(commit)}`, Buffer.from(JSON.stringify({ paths })), signal);
}

/**
 * One Hub API call over our own HTTP client, as the bytes are fetched: its redirects checked by
 * redirectTarget (the token dropped off the Hub's host), the head within the idle timeout, the
 * body at the minimum rate (a trickling answer is E_TOO_SLOW), through the same proxies and
 * kept-alive connections (those preconnect opened while the manifest loaded). Not fetch: the
 * first fetch of a process loads undici and compiles its llhttp WebAssembly, ~0.1 CPU-s and
 * tens of milliseconds before the first byte of every sync (issue 15). Throws HubApiStatus for
 * a non-2xx answer and a SyntaxError for one that is not JSON.
 */
async function hubApi(o: HubApiOptions, path: string, body: Buffer | undefined, signal: AbortSignal): Promise<unknown> {
  const floor = new RateFloor(o.rate, signal);
  try {
    const res = await httpRequest({
      url: `${o.endpoint}${path}`,
      method: body === undefined ? 'GET' : 'POST',
      body,
      authorization: o.token === undefined ? undefined : `Bearer ${o.token}`,
      headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
      idleTimeoutMs: o.idleTimeoutMs,
      signal: floor.signal,
      proxies: o.proxies,
      connections: o.connections,
    });
    if (res.status < 200 || res.status > 299) {
      res.body.discard();
      throw new HubApiStatus(res.status, headerValue(res.headers, 'x-error-code'), res.url);
    }
    floor.start(new URL(res.url).host);
    const parts: Buffer[] = [];
    let n = 0;
    try {
      // Blocks are views into buffers the reader reuses: each is copied before the next read.
      for (let b = await res.body.next(); b !== null; b = await res.body.next()) {
        floor.count(b.length);
        n += b.length;
        if (n > MAX_ANSWER) throw new SyntaxError(`an answer over ${MAX_ANSWER} bytes`);
        parts.push(Buffer.from(b));
      }
    } finally {
      res.body.destroy();
    }
    return JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown;
  } catch (e) {
    throw floor.tripped ?? e;
  } finally {
    floor.stop();
  }
}
