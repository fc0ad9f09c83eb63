import PQueue from 'p-queue';
import { ModelsyncError } from '../errors.js';
import type { CivitaiPin, CivitaiRef, Entry } from '../manifest/types.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import type { StateDb } from '../state/db.js';
import type { ConnectionBudget } from '../transfer/budget.js';
import type { RateRule } from '../transfer/rate-floor.js';
import type { RetryPolicy } from '../transfer/retry.js';
import { fetchCivitaiVersion } from './civitai-api.js';
import { openCivitaiFile } from './civitai-download.js';
import { pickFile } from './civitai-pick.js';
import { cachedVersion, short, storedVersion, type CivitaiVersion } from './civitai-version.js';
import type { OpenBody, OpenRequest, RemoteFile, Source } from './source.js';

const API_CONCURRENCY = 4;

export interface CivitaiSourceOptions {
  /** CIVITAI_ENDPOINT, e.g. https://civitai.com */
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly offline: boolean;
  /** --refresh: ask the API again even for versions the state DB knows. */
  readonly refresh: boolean;
  readonly idleTimeoutMs: number;
  readonly db: StateDb;
  readonly proxies: ProxySettings;
  readonly policy: RetryPolicy;
  /** The sync's connection budget: API calls and downloads use its connections. */
  readonly connections: ConnectionBudget;
  /** The minimum rate (MODELSYNC_MIN_RATE): API answers and the site's refusal pages are held to it too. */
  readonly rate: RateRule;
}

/** What `open` needs: the version and the download URL's parameters for its file. */
export interface CivitaiLocator {
  readonly pin: CivitaiPin;
}

/**
 * Civitai model versions: metadata from `GET /api/v1/model-versions/{id}` (cached in the state
 * DB: a version is immutable, so a warm start or an offline sync asks nothing), bytes from the
 * site's download endpoint, which redirects to a signed, expiring URL on a storage host. The
 * sha256 is the API's (or the manifest's, which must agree); the size is only what the download
 * says (the API's `sizeKB` is approximate), and the hash decides.
 */
export class CivitaiSource implements Source {
  private readonly inFlight = new Map<number, Promise<CivitaiVersion>>();
  /** Civitai rate-limits its API: a manifest of a hundred LoRAs asks a few versions at a time, not all at once. */
  private readonly apiCalls = new PQueue({ concurrency: API_CONCURRENCY });
  /** The signed storage URL a download redirected to, per file; reused for every chunk until it expires. */
  private readonly storageUrls = new Map<string, string>();

  constructor(private readonly opts: CivitaiSourceOptions) {}

  /** A version's description: the state DB's, else the API's (then remembered). */
  version(ref: CivitaiRef, signal: AbortSignal): Promise<CivitaiVersion> {
    const id = ref.versionId;
    if (!this.opts.refresh) {
      const known = cachedVersion(this.opts.db.civitaiVersion(id), id);
      if (known !== undefined) return Promise.resolve(known);
    }
    if (this.opts.offline) return Promise.reject(new ModelsyncError('E_OFFLINE', `offline, and Civitai version ${id} was never resolved here`, { url: ref.uri }));
    let p = this.inFlight.get(id);
    if (p === undefined) {
      p = this.apiCalls.add(() => fetchCivitaiVersion(this.opts, id, ref.uri, signal)).then((v) => {
        this.opts.db.putCivitaiVersion(id, storedVersion(v));
        return v;
      });
      p.catch(() => this.inFlight.delete(id));
      this.inFlight.set(id, p);
    }
    return p;
  }

  async resolve(entries: readonly Entry[], signal: AbortSignal): Promise<RemoteFile[]> {
    return Promise.all(entries.map((e) => this.resolveOne(e, signal)));
  }

  private async resolveOne(e: Entry, signal: AbortSignal): Promise<RemoteFile> {
    const ref = e.source;
    if (ref.kind !== 'civitai') throw new Error('CivitaiSource given a non-civitai entry');
    const ctx = { entry: e.index, url: ref.uri };
    // A locked entry carries its file, hash and size: the API is not asked at all.
    const pinned = e.pinned?.civitai;
    if (pinned !== undefined && e.pinned !== undefined) return this.fileFor(e, pinned, e.pinned.hex, e.pinned.size, undefined);
    const v = await this.version(ref, signal);
    this.checkDownloadable(v, ref);
    const f = pickFile(v, ref, e.file);
    if (f instanceof ModelsyncError) throw new ModelsyncError(f.code, f.message, ctx);
    const sha = f.sha256 ?? e.sha256;
    if (sha === undefined) throw new ModelsyncError('E_MANIFEST', `Civitai gives no sha256 for ${short(f.name)} of version ${v.id}: add sha256: to the entry`, ctx);
    if (e.sha256 !== undefined && e.sha256 !== sha) {
      throw new ModelsyncError('E_HASH_MISMATCH', `manifest sha256 ${e.sha256} disagrees with Civitai's ${sha} for ${short(f.name)} of version ${v.id}`, ctx);
    }
    const pin: CivitaiPin = { version: v.id, file: f.name, type: f.type, format: f.format, size: f.size, fp: f.fp };
    return this.fileFor(e, pin, sha, e.size, f.sizeHint);
  }

  /** The version's own word that nobody (or nobody without a token) may download it: one clear line. */
  private checkDownloadable(v: CivitaiVersion, ref: CivitaiRef): void {
    const ctx = { url: ref.uri };
    if (v.usageControl !== undefined && v.usageControl !== 'Download') {
      throw new ModelsyncError('E_NOT_DOWNLOADABLE', `Civitai version ${v.id} cannot be downloaded: its creator allows ${short(v.usageControl)} only`, ctx);
    }
    if (this.opts.token !== undefined) return;
    const ends = v.earlyAccessEndsAt === undefined ? undefined : Date.parse(v.earlyAccessEndsAt);
    if (v.availability === 'EarlyAccess' && (ends === undefined || ends > Date.now())) {
      const until = v.earlyAccessEndsAt === undefined ? '' : ` until ${v.earlyAccessEndsAt}`;
      throw new ModelsyncError('E_EARLY_ACCESS', `Civitai version ${v.id} is in early access${until}: set CIVITAI_TOKEN to an account that has access, or wait`, ctx);
    }
    if (v.availability === 'Private') throw new ModelsyncError('E_AUTH', `Civitai version ${v.id} is private: set CIVITAI_TOKEN to an account it is shared with`, ctx);
  }

  private fileFor(e: Entry, pin: CivitaiPin, sha: string, size: number | undefined, sizeHint: number | undefined): RemoteFile {
    const locator: CivitaiLocator = { pin };
    return { key: { algo: 'sha256', hex: sha }, size, sizeHint, version: `civitai:${pin.version}:${sha}`, uri: e.source.uri, locator };
  }

  async open(file: RemoteFile, req: OpenRequest): Promise<OpenBody> {
    const { pin } = file.locator as CivitaiLocator;
    return openCivitaiFile(
      { endpoint: this.opts.endpoint, token: this.opts.token, idleTimeoutMs: this.opts.idleTimeoutMs, proxies: this.opts.proxies, connections: this.opts.connections, storageUrls: this.storageUrls, rate: this.opts.rate },
      file,
      pin,
      req,
    );
  }
}
