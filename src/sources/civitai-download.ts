import { ModelsyncError } from '../errors.js';
import type { CivitaiPin } from '../manifest/types.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import { headerValue, httpRequest, statusError, type HttpResponse } from '../transfer/http.js';
import { RateFloor, type RateRule } from '../transfer/rate-floor.js';
import { readText } from '../transfer/read-text.js';
import { bodyFromResponse } from './http-body.js';
import type { OpenBody, OpenRequest, RemoteFile } from './source.js';

export interface CivitaiDownloadEnv {
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly idleTimeoutMs: number;
  readonly proxies: ProxySettings;
  readonly connections: ConnectionBudget;
  /** Signed storage URLs by sha256, for the chunks after the first. */
  readonly storageUrls: Map<string, string>;
  /** The minimum rate a refusal page is read at (the download's own floor starts with the file's body). */
  readonly rate: RateRule;
}

/** The site's download URL for a version's file: its own parameters, never the API's `downloadUrl` host. */
export function civitaiDownloadUrl(endpoint: string, pin: CivitaiPin): string {
  const q = new URLSearchParams({ type: pin.type });
  if (pin.format !== undefined) q.set('format', pin.format);
  if (pin.size !== undefined) q.set('size', pin.size);
  if (pin.fp !== undefined) q.set('fp', pin.fp);
  return `${endpoint}/api/download/models/${pin.version}?${q.toString()}`;
}

/**
 * One ranged GET of a Civitai file. The download endpoint (with CIVITAI_TOKEN) redirects to a
 * signed storage URL on another host, which never sees the token (httpRequest drops it on the
 * host change) and whose Content-Disposition is never read. That URL serves every chunk until it
 * expires (a 401/403 from storage), then the endpoint is asked for a fresh one. What the site
 * says instead of a file (a login page, early access, a 404 that means "log in") is one line
 * naming CIVITAI_TOKEN.
 */
export async function openCivitaiFile(env: CivitaiDownloadEnv, file: RemoteFile, pin: CivitaiPin, req: OpenRequest): Promise<OpenBody> {
  const site = new URL(env.endpoint).origin;
  const auth = env.token === undefined ? undefined : `Bearer ${env.token}`;
  for (let fresh = 0; ; fresh++) {
    const stored = env.storageUrls.get(file.key.hex);
    // The caller's rate floor starts once the file's body is handed over; a refusal page is read
    // before that, so it has its own (a login page trickled a byte at a time never trips the idle
    // timeout). Its parent never aborts: the request follows the caller's signal all along.
    const page = new RateFloor(env.rate, new AbortController().signal);
    let res: HttpResponse;
    let fromSite: boolean;
    try {
      res = await httpRequest({
        url: stored ?? civitaiDownloadUrl(env.endpoint, pin),
        // A stored URL is the storage host's: the token is never sent there.
        authorization: stored === undefined ? auth : undefined,
        range: req.range,
        idleTimeoutMs: env.idleTimeoutMs,
        signal: AbortSignal.any([req.signal, page.signal]),
        proxies: env.proxies,
        connections: env.connections,
      });
      fromSite = new URL(res.url).origin === site;
      if (!fromSite && (res.status === 401 || res.status === 403) && fresh < 2) {
        res.body.discard();
        env.storageUrls.delete(file.key.hex);
        continue;
      }
      if (fromSite) await refusal(env, res, file, pin, page);
    } catch (e) {
      throw page.tripped ?? e;
    } finally {
      page.stop();
    }
    if (res.status === 200 || res.status === 206) {
      if (!fromSite) env.storageUrls.set(file.key.hex, res.url);
      return bodyFromResponse(res);
    }
    if (res.status === 416 && req.range !== undefined) throw statusError(res, `range ${req.range.start}-${req.range.end} of ${file.uri}`);
    throw statusError(res, `download of ${file.uri}`);
  }
}

/** Throws when the site itself answered with something other than the file; returns otherwise. */
async function refusal(env: CivitaiDownloadEnv, res: HttpResponse, file: RemoteFile, pin: CivitaiPin, page: RateFloor): Promise<void> {
  const ctx = { url: file.uri, status: res.status };
  const where = new URL(res.url);
  const html = (headerValue(res.headers, 'content-type') ?? '').includes('text/html');
  const ok = res.status === 200 || res.status === 206;
  if (ok && !html && !where.pathname.startsWith('/login')) return;
  if (res.status === 429 || res.status >= 500) return;
  if (ok || res.status === 401 || res.status === 403) page.start(where.host);
  const text = ok || res.status === 401 || res.status === 403 ? (await readText(res.body, 64 * 1024, (n) => page.count(n))).text : (res.body.discard(), '');
  const reason = where.searchParams.get('reason') ?? '';
  if (/early.?access/i.test(reason) || /early.?access/i.test(text)) {
    throw new ModelsyncError('E_EARLY_ACCESS', `Civitai version ${pin.version} is in early access: ${env.token === undefined ? 'set CIVITAI_TOKEN to an account that has access' : 'the account of CIVITAI_TOKEN has no access to it yet'}`, ctx);
  }
  if (where.pathname.startsWith('/login') || reason === 'download-auth' || res.status === 401 || res.status === 403 || ok) {
    const what = env.token === undefined ? 'its creator requires a logged-in download: set CIVITAI_TOKEN (an API key from your Civitai account settings)' : 'check that CIVITAI_TOKEN is valid and its account may download it';
    throw new ModelsyncError('E_AUTH', `Civitai refused the download of version ${pin.version} (${where.pathname.startsWith('/login') ? 'redirected to its login page' : `HTTP ${res.status}`}): ${what}`, ctx);
  }
  if (res.status === 404) {
    // The API lists the version, so a 404 here is how the site says "log in" to anonymous callers.
    if (env.token === undefined) throw new ModelsyncError('E_AUTH', `Civitai answered 404 for the download of version ${pin.version}, which its API lists: it needs a logged-in download: set CIVITAI_TOKEN`, ctx);
    throw new ModelsyncError('E_NOT_FOUND', `Civitai has no file ${JSON.stringify(pin.file)} to download for version ${pin.version} (HTTP 404)`, ctx);
  }
}
