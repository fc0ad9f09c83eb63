import type { ApiInterleave } from './hub-interleave.js';
import type { MetadataLies } from './hub-lies.js';

export type RepoType = 'model' | 'dataset';

export interface HubFile {
  path: string;
  content: Buffer;
  /** Default: true for weight extensions or content over 100_000 bytes. */
  lfs?: boolean;
}

export interface HubRepo {
  /** "org/name" */
  id: string;
  type?: RepoType;
  files: HubFile[];
  private?: boolean;
  gated?: boolean;
  /** Large files stored in Xet: resolve answers the Xet way and redirects to the bridge (hub-xet.ts). */
  xet?: boolean;
}

/**
 * Faults for one blob. Counters decrement as they fire; a fault that cannot apply to a response
 * (a cut past its end, a flipped offset outside the range served) does not fire and is not used up.
 * Status faults (cdnExpire, status503, rateLimit) hit HEAD as well as GET, as a real outage
 * would; body faults hit GET only. A path key matches that path in every repo.
 */
export interface BlobFaults {
  status503?: number;
  rateLimit?: { times: number; retryAfter: string };
  cutAfterBytes?: { bytes: number; times: number };
  flipByteAt?: { offset: number; times: number };
  ignoreRange?: boolean;
  wrongContentRange?: { times: number };
  shorterBody?: { times: number };
  longerBody?: { times: number };
  bytesPerSecond?: number;
  stallAfterBytes?: { bytes: number; times: number };
  cdnExpire?: { times: number };
  /** Xet bridge: honour this many GETs, then every presigned URL issued so far is expired (403). */
  xetExpireAfter?: { requests: number };
  /** Xet bridge: add an X-Linked-Etag and X-Linked-Size of its own that are wrong (only the first hop's count). */
  xetLyingBridge?: boolean;
  /** Body-level lies (GET only, every time): a complete answer `n` bytes short, with a matching Content-Length. */
  truncateBy?: number;
  /** Content-Length declared as the real length plus this (the body sent is the real one). */
  contentLengthDelta?: number;
  /** No Content-Length (chunked) and `*` for the total in Content-Range: no size anywhere. */
  noLength?: boolean;
  /** After the real bytes, garbage that never ends (chunked; implies noLength). */
  endlessBody?: boolean;
  /** A 206's Content-Range sent as this text instead of the true one. */
  contentRange?: string;
  /** The resolve redirect of an LFS file goes here instead of the CDN (absolute, relative or not a URL). */
  resolveRedirect?: string;
  /** Headers of the resolve answer replaced (X-Linked-Etag, X-Linked-Size, X-Repo-Commit); '' removes one. */
  resolveHeaders?: Record<string, string>;
  /** The next `times` GETs whose range holds file offset `offset` stop sending there and keep the connection open. */
  stallAtOffset?: { offset: number; times: number };
  /** The next `times` GETs whose range holds file offset `offset` are cut (socket destroyed) there. */
  cutAtOffset?: { offset: number; times: number };
}

export interface HubRequestRecord {
  host: 'hub' | 'cdn';
  method: string;
  url: string;
  /** 0 until the response head is sent (a request still being handled). */
  status: number;
  authorization: string | undefined;
  range: string | undefined;
  /** Requests in flight on this host (hub or cdn) when this one arrived, itself included. */
  inFlight: number;
  /** Date.now() when the answer began (after the time to first byte): the bench's first-byte clock. */
  at: number;
  /** The connection it came on: its number on this host's server, in order of acceptance (0: not counted). */
  conn: number;
}

export interface HubStats {
  requests: HubRequestRecord[];
  bytesServed: Map<string, number>;
  apiCalls: number;
  cdnRequestsWithAuth: number;
  /** TCP connections each server has accepted since it started (never reset). */
  connections: { hub: number; cdn: number };
}

export interface Hub {
  endpoint: string;
  cdnOrigin: string;
  /** The Xet bridge (cas-bridge.xethub.hf.co in real life), on 127.0.0.3. */
  bridgeOrigin: string;
  /** Anonymous resolve of plain files on public repos answers 307 to /api/resolve-cache/... */
  plainRedirect: boolean;
  /** Real Hub leaves metadata of gated repos readable; set true to gate API calls too. */
  gateApiCalls: boolean;
  /** Two repos' API answers interleaved (hub-interleave.ts): one's head, the other's whole answer, the first's body. Once per Hub. */
  interleaveApi: ApiInterleave | undefined;
  treePageSize: number;
  /** When set, every API call answers 307 to this origin plus its own path (a lying mirror's redirect). */
  apiRedirect: string | undefined;
  /** When set, API answers trickle out at this many bytes per second (a mirror that is all but dead). */
  apiBytesPerSecond: number | undefined;
  /** Milliseconds every request on every host waits before it is answered: a real server's time to first byte. */
  ttfbMs: number;
  /** While set, every Hub API call waits for it before it is answered (lookups that take their time). */
  holdApi: Promise<void> | undefined;
  signedUrlTtlSeconds: number;
  addRepo(repo: HubRepo): { commit: string };
  pushFiles(repoId: string, files: HubFile[], type?: RepoType): { commit: string };
  setRef(repoId: string, ref: string, commit: string, type?: RepoType): void;
  setFaults(sha256OrPath: string, faults: BlobFaults): void;
  clearFaults(): void;
  /** The lying-metadata mode: hostile paths-info / tree entries and revision shas (see hub-lies.ts). */
  lies: MetadataLies;
  tokens: { valid: Set<string>; gatedApproved: Set<string> };
  stats: HubStats;
  resetStats(): void;
  close(): Promise<void>;
}
