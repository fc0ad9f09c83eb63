import { ModelsyncError } from '../errors.js';
import type { Entry, HttpsRef } from '../manifest/types.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import { redactUrl } from '../redact.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import { httpRequest, statusError } from '../transfer/http.js';
import { bodyFromResponse } from './http-body.js';
import type { ContentKey } from '../content-key.js';
import type { OpenBody, OpenRequest, RemoteFile, Source } from './source.js';

export interface HttpsSourceOptions {
  /** Bearer tokens by exact host; sent only to that host, never after a redirect elsewhere. */
  readonly tokens: ReadonlyMap<string, string>;
  readonly idleTimeoutMs: number;
  readonly proxies: ProxySettings;
  readonly connections: ConnectionBudget;
}

/**
 * Plain https:// downloads. The manifest's sha256 is the only truth: the server's name for the
 * file (Content-Disposition) is never used, and the URL is the only thing we ask it for.
 */
export class HttpsSource implements Source {
  constructor(private readonly opts: HttpsSourceOptions) {}

  resolve(entries: readonly Entry[]): Promise<RemoteFile[]> {
    return Promise.resolve(
      entries.map((e) => {
        const ref = e.source as HttpsRef;
        if (e.sha256 === undefined) throw new ModelsyncError('E_MANIFEST', `${redactUrl(ref.url)} has no sha256`, { entry: e.index });
        return this.fileFor(e, { algo: 'sha256', hex: e.sha256 });
      }),
    );
  }

  /** The RemoteFile of an entry whose bytes must hash to `key` (`modelsync lock` opens one to learn it). */
  fileFor(e: Entry, key: ContentKey): RemoteFile {
    const ref = e.source as HttpsRef;
    return { key, size: e.size, version: `sha256:${key.hex}`, uri: redactUrl(ref.url), locator: ref };
  }

  host(file: RemoteFile): string {
    return new URL((file.locator as HttpsRef).url).host;
  }

  async open(file: RemoteFile, req: OpenRequest): Promise<OpenBody> {
    const ref = file.locator as HttpsRef;
    const host = new URL(ref.url).hostname.toLowerCase();
    const token = this.opts.tokens.get(host);
    const res = await httpRequest({
      url: ref.url,
      authorization: token === undefined ? undefined : `Bearer ${token}`,
      range: req.range,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      signal: req.signal,
      proxies: this.opts.proxies,
      connections: this.opts.connections,
    });
    if (res.status === 200 || res.status === 206) return bodyFromResponse(res);
    if (res.status === 401 || res.status === 403) {
      res.body.discard();
      const hint = token === undefined ? `set a token for ${host} in MODELSYNC_HTTP_TOKENS` : `check the token for ${host}`;
      throw new ModelsyncError('E_AUTH', `${file.uri}: HTTP ${res.status}; ${hint}`, { url: file.uri, status: res.status });
    }
    if (res.status === 404 || res.status === 410) {
      res.body.discard();
      throw new ModelsyncError('E_NOT_FOUND', `${file.uri}: HTTP ${res.status}`, { url: file.uri, status: res.status });
    }
    throw statusError(res, `download of ${file.uri}`);
  }
}
