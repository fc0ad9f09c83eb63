import type { IncomingHttpHeaders } from 'node:http';
import { ModelsyncError } from '../errors.js';
import type { Entry, HfRef, PinnedContent } from '../manifest/types.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import { redactUrl } from '../redact.js';
import { shown } from '../remote-value.js';
import type { StateDb } from '../state/db.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import type { RateRule } from '../transfer/rate-floor.js';
import { headerValue, httpRequest, statusError } from '../transfer/http.js';
import { preconnect } from '../transfer/preconnect.js';
import { isCommit } from '../content-key.js';
import { HubApiStatus, hubPathsInfo, hubRevision } from './hf-api.js';
import { readPathsInfo } from './hf-paths-info.js';
import { readResolveHeaders, type ResolveHeaders } from './hf-resolve-headers.js';
import { bodyFromResponse } from './http-body.js';
import type { OpenBody, OpenRequest, RemoteFile, Source } from './source.js';

export interface HfSourceOptions {
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly offline: boolean;
  readonly idleTimeoutMs: number;
  readonly rate: RateRule;
  readonly db: StateDb;
  readonly proxies: ProxySettings;
  /** The sync's connection budget: the file bytes' requests use its connections. */
  readonly connections: ConnectionBudget;
}

interface HfLocator {
  readonly ref: HfRef;
  readonly commit: string;
  readonly lfs: boolean;
}

/**
 * Hugging Face Hub source. Metadata from the Hub's API (one revision lookup and one paths-info
 * call per repo per sync, hf-api.ts) and bytes by ranged requests, both over our own HTTP client. Resolutions at a commit are immutable and cached in the
 * state DB, so a pinned or offline sync asks the Hub nothing.
 */
export class HfSource implements Source {
  /** The CDN URL a resolve redirected to, per file; reused for every chunk until it expires. */
  private readonly cdnUrls = new Map<string, string>();
  /**
   * A resolve on its way to the Hub, per file: the file's other requests wait for where it is
   * redirected (or undefined, when it was not) instead of each asking the Hub again. The first
   * wave of a file's chunks would otherwise cost one Hub request, and connection, per chunk.
   */
  private readonly asked = new Map<string, Promise<string | undefined>>();
  /** The CDN origin this endpoint redirected to last (state DB), for preconnect. */
  private cdnOrigin: string | undefined;

  constructor(private readonly opts: HfSourceOptions) {}

  async resolve(entries: readonly Entry[], signal: AbortSignal): Promise<RemoteFile[]> {
    // The lookups take a round trip or more: the connections the bytes will need open meanwhile.
    if (!this.opts.offline && entries.length > 0) this.preconnect(entries.length);
    const groups = new Map<string, Entry[]>();
    const out = new Map<Entry, RemoteFile>();
    for (const e of entries) {
      if (e.source.kind !== 'hf') throw new Error('HfSource given a non-hf entry');
      // A locked entry carries its commit, size and hash: no Hub API call at all.
      if (e.pinned?.commit !== undefined) {
        out.set(e, pinnedFile(e.source, e.pinned.commit, e.pinned));
        continue;
      }
      const k = `${e.source.repoType}\0${e.source.repo}\0${e.source.revision}`;
      groups.set(k, [...(groups.get(k) ?? []), e]);
    }
    await Promise.all(
      [...groups.values()].map(async (group) => {
        const files = await this.resolveGroup(group, signal);
        group.forEach((e, i) => out.set(e, files[i] as RemoteFile));
      }),
    );
    return entries.map((e) => out.get(e) as RemoteFile);
  }

  private async resolveGroup(group: readonly Entry[], signal: AbortSignal): Promise<RemoteFile[]> {
    const ref = group[0]?.source as HfRef;
    const commit = await this.commitFor(ref, signal, group[0] as Entry);
    const cached = this.rows(group, ref, commit);
    const missing = group.filter((_, i) => cached[i] === undefined);
    const problems = new Map<string, string>();
    if (missing.length > 0) {
      if (this.opts.offline) {
        throw new ModelsyncError('E_OFFLINE', `HF_HUB_OFFLINE is set and ${ref.repo}@${commit.slice(0, 12)} was never resolved here`, { entry: missing[0]?.index });
      }
      const asked = missing.map((e) => (e.source as HfRef).path);
      const infos = await this.api(group[0] as Entry, () => hubPathsInfo(this.opts, ref, commit, asked, signal));
      const verdict = readPathsInfo(infos, asked);
      // One transaction for the whole listing: a snapshot of 2,000 files is one fsync, not 2,000.
      this.opts.db.transaction(() => {
        for (const [p, v] of verdict) {
          if ('problem' in v) problems.set(p, v.problem);
          else this.opts.db.putHfFile({ repoType: ref.repoType, repo: ref.repo, commit, ...v.file });
        }
      });
    }
    const rows = missing.length > 0 ? this.rows(group, ref, commit) : cached;
    return group.map((e, i) => {
      const r = e.source as HfRef;
      const problem = problems.get(r.path);
      if (problem !== undefined) {
        throw new ModelsyncError('E_REMOTE_INVALID', `the Hub's paths-info for ${r.path} in ${r.repo}@${commit.slice(0, 12)} has ${problem}; refusing it`, { entry: e.index, url: e.source.uri });
      }
      const f = rows[i];
      if (!f) {
        throw new ModelsyncError('E_NOT_FOUND', `${r.path} does not exist in ${r.repo} at ${r.revision} (${commit.slice(0, 12)})`, { entry: e.index, url: e.source.uri });
      }
      if (e.sha256 !== undefined && f.algo === 'sha256' && f.hex !== e.sha256) {
        throw new ModelsyncError('E_HASH_MISMATCH', `manifest sha256 ${e.sha256} disagrees with the Hub's ${f.hex} for ${r.path}`, { entry: e.index, url: e.source.uri });
      }
      if (e.size !== undefined && e.size !== f.size) {
        throw new ModelsyncError('E_SIZE_MISMATCH', `manifest size ${e.size} disagrees with the Hub's ${f.size} for ${r.path}`, { entry: e.index, url: e.source.uri });
      }
      const locator: HfLocator = { ref: r, commit, lfs: f.algo === 'sha256' };
      return {
        key: { algo: f.algo, hex: f.hex },
        size: f.size,
        version: `${commit}:${f.hex}`,
        uri: e.source.uri,
        locator,
        commit,
      };
    });
  }

  /**
   * The state DB's rows for a group's files, read in one transaction: each read on its own takes
   * and drops SQLite's shared-memory locks (three fcntl calls), 12,000 of them for 2,000 files.
   */
  private rows(group: readonly Entry[], ref: HfRef, commit: string): (ReturnType<StateDb['hfFile']>)[] {
    let out: ReturnType<StateDb['hfFile']>[] = [];
    this.opts.db.transaction(() => {
      out = group.map((e) => this.opts.db.hfFile(ref.repoType, ref.repo, commit, (e.source as HfRef).path));
    });
    return out;
  }

  /** A revision to its commit: a 40-hex revision is one already; a branch is cached for offline use. */
  private async commitFor(ref: HfRef, signal: AbortSignal, entry: Entry): Promise<string> {
    if (isCommit(ref.revision)) return ref.revision;
    if (this.opts.offline) {
      const c = this.opts.db.hfRevision(ref.repoType, ref.repo, ref.revision);
      if (c === undefined) throw new ModelsyncError('E_OFFLINE', `HF_HUB_OFFLINE is set and ${ref.repo}@${ref.revision} was never resolved here`, { entry: entry.index });
      return c;
    }
    const info = await this.api(entry, () => hubRevision(this.opts, ref, signal));
    const sha: unknown = info !== null && typeof info === 'object' ? (info as { sha?: unknown }).sha : undefined;
    if (!isCommit(sha)) {
      // It becomes part of every URL of this repo and of the lock file: only a commit id will do.
      throw new ModelsyncError('E_REMOTE_INVALID', `the Hub answered ${shown(sha)} as the commit of ${ref.repo}@${ref.revision}, which is not a commit id (40 lowercase hex)`, { entry: entry.index, url: entry.source.uri });
    }
    this.opts.db.putHfRevision(ref.repoType, ref.repo, ref.revision, sha);
    return sha;
  }

  /** One Hub API call (hf-api.ts), its failure typed. */
  private async api<T>(entry: Entry, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (e) {
      throw this.apiError(e, entry);
    }
  }

  private apiError(e: unknown, entry: Entry): ModelsyncError {
    const ref = entry.source as HfRef;
    const ctx = { entry: entry.index, url: entry.source.uri, cause: e };
    if (e instanceof HubApiStatus) {
      const s = e.status;
      const code = e.errorCode;
      if (code === 'GatedRepo') {
        return new ModelsyncError('E_GATED', `${ref.repo} is gated: request access on its Hub page${this.opts.token ? ' with the account of your HF_TOKEN' : ', then set HF_TOKEN'}`, { ...ctx, status: s });
      }
      if (s === 401) {
        return new ModelsyncError('E_AUTH', `${ref.repo}: not authorized (HTTP 401); ${this.opts.token ? 'check that HF_TOKEN is valid and can read this repo' : 'private or missing repo: set HF_TOKEN'}`, { ...ctx, status: s });
      }
      if (s === 403) return new ModelsyncError('E_AUTH', `${ref.repo}: forbidden (HTTP 403); check HF_TOKEN's permissions`, { ...ctx, status: s });
      if (s === 404) {
        const what = code === 'RevisionNotFound' ? `revision "${ref.revision}" not found in ${ref.repo}` : code === 'EntryNotFound' ? `${ref.path} not found in ${ref.repo}` : `repo ${ref.repo} not found (or private: set HF_TOKEN)`;
        return new ModelsyncError('E_NOT_FOUND', what, { ...ctx, status: s });
      }
      return new ModelsyncError(s === 429 ? 'E_RATE_LIMITED' : 'E_HTTP', `Hub API answered HTTP ${s} for ${ref.repo}`, { ...ctx, status: s, retryable: s === 429 || s >= 500 });
    }
    if (e instanceof ModelsyncError) return e;
    if (e instanceof SyntaxError) {
      return new ModelsyncError('E_REMOTE_INVALID', `the Hub's answer for ${ref.repo} is malformed (${shown(e.message)})`, ctx);
    }
    const host = safeHost(this.opts.endpoint);
    return new ModelsyncError('E_NETWORK', `cannot reach the Hub at ${host} for ${ref.repo}`, { ...ctx, retryable: true });
  }

  /** Every file's bytes come through the Hub's resolve and its CDN: one host to adapt to. */
  host(): string {
    return safeHost(this.opts.endpoint);
  }

  /**
   * Connections to the Hub (every file's first request is a resolve there: one each, up to the
   * host's count) and to the CDN it redirected to last time (as many as the host may use), opened
   * while the lookups run. Through the proxy settings the requests will use; nothing is sent on
   * them until a request takes one.
   */
  private preconnect(files: number): void {
    const budget = this.opts.connections;
    const limit = budget.hostLimit(this.host());
    const opts = { proxies: this.opts.proxies, idleTimeoutMs: this.opts.idleTimeoutMs };
    const origin = (u: string | undefined): URL | undefined => {
      try {
        const url = u === undefined ? undefined : new URL(u);
        return url && (url.protocol === 'https:' || url.protocol === 'http:') ? url : undefined;
      } catch {
        return undefined;
      }
    };
    const hub = origin(this.opts.endpoint);
    if (hub) preconnect(budget, hub, Math.min(files, limit), opts);
    this.cdnOrigin ??= this.opts.db.meta(cdnMetaKey(this.opts.endpoint));
    const cdn = origin(this.cdnOrigin);
    if (cdn && cdn.host !== hub?.host) preconnect(budget, cdn, limit, opts);
  }

  /** Where the Hub now redirects a file, once one request asked; remembered for the next sync's preconnect. */
  private redirectedTo(hex: string): (to: string | undefined) => void {
    let done: (to: string | undefined) => void = () => undefined;
    const answer = new Promise<string | undefined>((r) => (done = r));
    this.asked.set(hex, answer);
    let settled = false;
    return (to) => {
      if (settled) return;
      settled = true;
      if (this.asked.get(hex) === answer) this.asked.delete(hex);
      done(to);
      if (to === undefined) return;
      const o = new URL(to).origin;
      if (o === this.cdnOrigin) return;
      this.cdnOrigin = o;
      try {
        this.opts.db.putMeta(cdnMetaKey(this.opts.endpoint), o);
      } catch {
        // Only a hint for the next sync's preconnect: a busy or read-only state DB costs nothing here.
      }
    };
  }

  async open(file: RemoteFile, req: OpenRequest): Promise<OpenBody> {
    const loc = file.locator as HfLocator;
    const auth = this.opts.token === undefined ? undefined : `Bearer ${this.opts.token}`;
    const hubHost = safeHost(this.opts.endpoint);
    for (let fresh = 0; ; fresh++) {
      let cdn = loc.lfs ? this.cdnUrls.get(file.key.hex) : undefined;
      const asked = loc.lfs && cdn === undefined && fresh === 0 ? this.asked.get(file.key.hex) : undefined;
      if (asked) cdn = await untilAborted(asked, req.signal);
      const settle = loc.lfs && cdn === undefined ? this.redirectedTo(file.key.hex) : undefined;
      try {
        const got = await this.ask(file, req, loc, cdn, auth, settle && ((to, i) => (i === 0 && to.host !== hubHost ? settle(to.toString()) : undefined)), fresh);
        if (got !== undefined) return got;
      } finally {
        settle?.(undefined);
      }
    }
  }

  /** One request for a file's bytes: its body, or undefined when a signed CDN URL expired and the Hub must be asked again. */
  private async ask(
    file: RemoteFile,
    req: OpenRequest,
    loc: HfLocator,
    cdn: string | undefined,
    auth: string | undefined,
    redirected: ((to: URL, index: number) => void) | undefined,
    fresh: number,
  ): Promise<OpenBody | undefined> {
    const url = cdn ?? resolveUrl(this.opts.endpoint, loc);
    // Only the Hub's own first answer counts: later hops (a CDN, a storage bridge) may send
    // headers of the same names that mean something else. Checked before its redirect is
    // followed, so that a lying answer costs no request elsewhere.
    const check = (headers: IncomingHttpHeaders, redirected: boolean): void => {
      const wrong = resolveDisagrees(readResolveHeaders(headers), file, loc, redirected);
      if (wrong) throw wrong;
    };
    const res = await httpRequest({
      url,
      beforeRedirect: cdn === undefined ? (hop, i) => (i === 0 ? check(hop.headers, true) : undefined) : undefined,
      redirected,
      // Never send the token to the CDN: a cached CDN URL is another host.
      authorization: cdn === undefined ? auth : undefined,
      range: req.range,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      signal: req.signal,
      proxies: this.opts.proxies,
      connections: this.opts.connections,
    });
    const viaCdn = cdn !== undefined || res.hops.length > 0;
    // A signed CDN URL expired: resolve again through the Hub, at most twice in a row.
    if ((res.status === 403 || res.status === 401) && loc.lfs && viaCdn && fresh < 2) {
      res.body.discard();
      this.cdnUrls.delete(file.key.hex);
      return undefined;
    }
    if (cdn === undefined && res.hops.length === 0) {
      try {
        check(res.headers, false);
      } catch (e) {
        res.body.discard();
        throw e;
      }
    }
    if (cdn === undefined && loc.lfs && res.hops.length > 0 && (res.status === 200 || res.status === 206)) this.cdnUrls.set(file.key.hex, res.url);
    if (res.status === 200 || res.status === 206) return bodyFromResponse(res);
    if (res.status === 416 && req.range !== undefined) throw statusError(res, `range ${req.range.start}-${req.range.end} of ${file.uri}`);
    if (res.status === 401 || res.status === 403) {
      res.body.discard();
      const repo = loc.ref.repo;
      if (headerValue(res.headers, 'x-error-code') === 'GatedRepo') {
        throw new ModelsyncError('E_GATED', `${repo} is gated: request access on its Hub page${this.opts.token ? ' with the account of your HF_TOKEN' : ', then set HF_TOKEN'}`, { url: file.uri, status: res.status });
      }
      const hint = this.opts.token ? 'check that HF_TOKEN is valid and can read this repo' : 'set HF_TOKEN';
      throw new ModelsyncError('E_AUTH', `${file.uri}: HTTP ${res.status} from ${redactUrl(res.url)}; ${hint}`, { url: file.uri, status: res.status });
    }
    if (res.status === 404) {
      res.body.discard();
      throw new ModelsyncError('E_NOT_FOUND', `${file.uri}: not found (HTTP 404)`, { url: file.uri, status: 404 });
    }
    throw statusError(res, `download of ${file.uri}`);
  }
}

/**
 * What in the Hub's first answer to a resolve contradicts the file we resolved: a malformed
 * header, another commit than the one asked for (commits never change: a mirror that lies), or,
 * on an LFS redirect, another sha256 or size (the file changed: resolve again and start over).
 */
function resolveDisagrees(said: ResolveHeaders | { readonly problem: string }, file: RemoteFile, loc: HfLocator, redirected: boolean): ModelsyncError | undefined {
  const ctx = { url: file.uri };
  if ('problem' in said) return new ModelsyncError('E_REMOTE_INVALID', `the Hub's answer for ${file.uri} has ${said.problem}; refusing it`, ctx);
  if (said.repoCommit !== undefined && said.repoCommit !== loc.commit) {
    return new ModelsyncError('E_REMOTE_INVALID', `the Hub answered for commit ${said.repoCommit} when asked for ${file.uri} at ${loc.commit}; refusing it`, ctx);
  }
  if (!loc.lfs || !redirected) return undefined;
  if (said.linkedEtag !== undefined && said.linkedEtag !== file.key.hex) return new ModelsyncError('E_SOURCE_CHANGED', `the Hub now serves ${said.linkedEtag} for ${file.uri}, expected ${file.key.hex}`, ctx);
  if (said.linkedSize !== undefined && file.size !== undefined && said.linkedSize !== file.size) {
    return new ModelsyncError('E_SOURCE_CHANGED', `the Hub now says ${file.uri} has ${said.linkedSize} bytes, expected ${file.size}`, ctx);
  }
  return undefined;
}

function pinnedFile(ref: HfRef, commit: string, pin: PinnedContent): RemoteFile {
  const locator: HfLocator = { ref, commit, lfs: pin.algo === 'sha256' };
  return { key: { algo: pin.algo, hex: pin.hex }, size: pin.size, version: `${commit}:${pin.hex}`, uri: ref.uri, locator, commit };
}

function resolveUrl(endpoint: string, loc: HfLocator): string {
  const prefix = loc.ref.repoType === 'dataset' ? 'datasets/' : '';
  const p = loc.ref.path.split('/').map(encodeURIComponent).join('/');
  return `${endpoint}/${prefix}${loc.ref.repo}/resolve/${loc.commit}/${p}`;
}

/** The state DB's `meta` key for the CDN origin an endpoint redirected to last. */
function cdnMetaKey(endpoint: string): string {
  return `hf-cdn-origin ${endpoint}`;
}

/** `p`, or the signal's reason as soon as it aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}

function safeHost(u: string): string {
  try {
    return new URL(u).host;
  } catch {
    return u;
  }
}
