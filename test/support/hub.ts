/**
 * A local Hugging Face Hub plus CDN, faithful to /work/shared/docs/hub-protocol.md, with
 * per-blob faults. The Hub listens on 127.0.0.1 and the CDN on 127.0.0.2 so that redirects
 * really change host (and clients really have to drop credentials).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { handleApi } from './hub-api.js';
import { Interleaver } from './hub-interleave.js';
import type { BodyEnv } from './hub-body.js';
import { decodeSegments, paceBody, redirectTo, sendError, type Exchange } from './hub-http.js';
import { MetadataLies } from './hub-lies.js';
import { handleCdn, handleResolve, handleResolveCache, UrlSigner, type ResolveEnv } from './hub-resolve.js';
import { RepoStore } from './hub-store.js';
import type { BlobFaults, Hub, HubStats } from './hub-types.js';
import { handleBridge, xetReadToken, XetSigner, type XetEnv } from './hub-xet.js';

export type { BlobFaults, Hub, HubFile, HubRepo, HubRequestRecord, HubStats, RepoType } from './hub-types.js';
export type { EntryLies } from './hub-lies.js';
export { gitBlobSha1Hex, sha256Hex } from './hub-store.js';
export { makeSafetensors } from './safetensors.js';

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function carriesCredentials(req: IncomingMessage): boolean {
  return Object.keys(req.headers).some(
    (h) => h === 'authorization' || h === 'cookie' || h.startsWith('x-auth') || h.startsWith('x-api-key'),
  );
}

export async function startHub(): Promise<Hub> {
  const store = new RepoStore();
  const faults = new Map<string, BlobFaults>();
  const lies = new MetadataLies();
  const stats: HubStats = { requests: [], bytesServed: new Map(), apiCalls: 0, cdnRequestsWithAuth: 0, connections: { hub: 0, cdn: 0 } };
  const sockets = new Set<Socket>();
  /** Each accepted socket's number on its server, in order of acceptance (1, 2, ...). */
  const socketIds = new WeakMap<Socket, number>();
  const hubServer = createServer();
  const cdnServer = createServer();
  const bridgeServer = createServer();
  for (const server of [hubServer, cdnServer, bridgeServer]) {
    server.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      const host = server === hubServer ? 'hub' : server === cdnServer ? 'cdn' : undefined;
      if (host) socketIds.set(socket, ++stats.connections[host]);
    });
  }
  const hubPort = await listen(hubServer, '127.0.0.1');
  const cdnPort = await listen(cdnServer, '127.0.0.2').catch(async (err: unknown) => {
    await new Promise((r) => hubServer.close(r));
    throw err;
  });
  const bridgePort = await listen(bridgeServer, '127.0.0.3').catch(async (err: unknown) => {
    await Promise.all([hubServer, cdnServer].map((s) => new Promise((r) => s.close(r))));
    throw err;
  });

  const hub: Hub = {
    endpoint: `http://127.0.0.1:${hubPort}`,
    cdnOrigin: `http://127.0.0.2:${cdnPort}`,
    bridgeOrigin: `http://127.0.0.3:${bridgePort}`,
    plainRedirect: false,
    gateApiCalls: false,
    interleaveApi: undefined,
    treePageSize: 1000,
    apiRedirect: undefined,
    apiBytesPerSecond: undefined,
    ttfbMs: 0,
    holdApi: undefined,
    signedUrlTtlSeconds: 3600,
    tokens: { valid: new Set(), gatedApproved: new Set() },
    stats,
    addRepo: (repo) => store.add(repo),
    pushFiles: (repoId, files, type) => store.push(repoId, files, type),
    setRef: (repoId, ref, commit, type) => store.setRef(repoId, ref, commit, type),
    // A copy: counters are consumed here, and a test may reuse one literal for several blobs.
    setFaults: (key, f) => void faults.set(key, structuredClone(f)),
    clearFaults: () => faults.clear(),
    lies,
    resetStats: () => {
      stats.requests.length = 0;
      stats.bytesServed.clear();
      stats.apiCalls = 0;
      stats.cdnRequestsWithAuth = 0;
    },
    close: async () => {
      const closed = Promise.all([hubServer, cdnServer, bridgeServer].map((s) => new Promise<void>((r) => s.close(() => r()))));
      // Stalled and paced responses would otherwise hold server.close() open indefinitely.
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };

  const body: BodyEnv = {
    faults,
    countBytes: (key, n) => void stats.bytesServed.set(key, (stats.bytesServed.get(key) ?? 0) + n),
  };
  const signer = new UrlSigner();
  const interleaver = new Interleaver();
  const xet: XetEnv = {
    body,
    signer: new XetSigner(),
    settings: hub,
    blob: (h) => {
      const f = store.xetBlob(h);
      return f && { content: f.content, sha256: f.sha256, path: f.path };
    },
  };
  const env: ResolveEnv = { store, body, signer, xet, settings: hub };

  const inFlight = { hub: 0, cdn: 0 };
  // Read per request: a test or the bench sets it on the live Hub.
  const afterTtfb =
    (handle: (req: IncomingMessage, res: ServerResponse) => void) =>
    (req: IncomingMessage, res: ServerResponse): void => {
      if (hub.ttfbMs > 0) setTimeout(() => handle(req, res), hub.ttfbMs);
      else handle(req, res);
    };
  const exchange = (host: 'hub' | 'cdn', req: IncomingMessage, res: ServerResponse, base: string): Exchange => {
    const raw = req.url ?? '/';
    // Concatenate rather than resolve against a base, so "//x" stays a path and not a host.
    const url = raw.startsWith('/') ? new URL(base + raw) : new URL(raw, base);
    inFlight[host]++;
    let counted = true;
    const over = (): void => {
      if (counted) inFlight[host]--;
      counted = false;
    };
    res.once('close', over);
    const record = {
      host,
      method: req.method ?? 'GET',
      url: raw,
      status: 0,
      authorization: req.headers.authorization,
      range: req.headers.range,
      inFlight: inFlight[host],
      at: Date.now(),
      conn: socketIds.get(req.socket) ?? 0,
    };
    stats.requests.push(record);
    if (host === 'hub' && url.pathname.startsWith('/api/') && !url.pathname.startsWith('/api/resolve-cache/')) stats.apiCalls++;
    if (host === 'cdn' && carriesCredentials(req)) stats.cdnRequestsWithAuth++;
    return { req, res, url, record, lastByteSent: over };
  };

  const fail = (ex: Exchange, err: unknown): void => {
    if (ex.res.headersSent) ex.req.socket.destroy();
    else sendError(ex, { status: 500, message: err instanceof Error ? err.message : String(err) });
  };

  hubServer.on('request', afterTtfb((req: IncomingMessage, res: ServerResponse) => {
    let ex: Exchange | undefined;
    const run = async (): Promise<void> => {
      ex = exchange('hub', req, res, hub.endpoint);
      const segs = decodeSegments(ex.url.pathname);
      if (!segs) return sendError(ex, { status: 400, message: 'Malformed URL encoding' });
      if (segs[0] === 'api' && segs[1] === 'resolve-cache') return handleResolveCache(ex, env, segs.slice(2));
      if (segs[0] === 'api' && segs[4] === 'xet-read-token' && store.get(segs[1] === 'datasets' ? 'dataset' : 'model', `${segs[2]}/${segs[3]}`)?.xet) return xetReadToken(ex, xet);
      if (segs[0] === 'api' && hub.apiRedirect !== undefined) return redirectTo(ex, `${hub.apiRedirect}${req.url ?? '/'}`);
      if (segs[0] === 'api' && hub.apiBytesPerSecond !== undefined) paceBody(res, hub.apiBytesPerSecond);
      if (segs[0] === 'api') {
        if (hub.holdApi) await hub.holdApi;
        await interleaver.around(`${segs[2] ?? ''}/${segs[3] ?? ''}`, hub.interleaveApi, res);
        return handleApi(ex, { store, lies, settings: hub }, segs.slice(1));
      }
      return handleResolve(ex, env, segs);
    };
    run().catch((err: unknown) => (ex ? fail(ex, err) : res.destroy()));
  }));
  cdnServer.on('request', afterTtfb((req: IncomingMessage, res: ServerResponse) => {
    let ex: Exchange | undefined;
    try {
      ex = exchange('cdn', req, res, hub.cdnOrigin);
      handleCdn(ex, env);
    } catch (err: unknown) {
      if (ex) fail(ex, err);
      else res.destroy();
    }
  }));
  // The bridge is the CDN of Xet-stored files: its requests count as the CDN's (bytes, auth).
  bridgeServer.on('request', afterTtfb((req: IncomingMessage, res: ServerResponse) => {
    let ex: Exchange | undefined;
    try {
      ex = exchange('cdn', req, res, hub.bridgeOrigin);
      handleBridge(ex, xet);
    } catch (err: unknown) {
      if (ex) fail(ex, err);
      else res.destroy();
    }
  }));
  return hub;
}
