/**
 * Corporate and cluster proxies (issue 16, part 3): HTTPS_PROXY / HTTP_PROXY / NO_PROXY honoured
 * by every request modelsync makes (its own HTTP client, for the Hub's metadata calls and every
 * file's bytes, and the AWS SDK), through a real forward proxy started here. The https Hub and CDN live under names
 * only the proxy can resolve (hub.proxied.test, cdn.proxied.test), as in a cluster whose pods
 * reach the world only through their egress proxy: a request that went around the proxy could
 * not connect at all.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, FAKE_SOURCE_TOKEN, leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from './support/cli.js';
import { startByteServer, type ByteServer } from './support/byte-server.js';
import { waitFor } from './support/cli-nodes.js';
import { startProxy, type TestProxy } from './support/connect-proxy.js';
import { makeSafetensors, startHub, type Hub } from './support/hub.js';
import { addModel, fileSha256, sha256 } from './support/models.js';
import { s3Env, startS3, type S3Fixture } from './support/s3-fixture.js';
import { secretsInFiles } from './support/scan-secrets.js';
import { makeSelfSignedCert } from './support/tls-cert.js';
import { startTlsFront, type TlsFront } from './support/tls-front.js';
import { startLevel } from '../src/transfer/host-limit.js';

const MiB = 1024 * 1024;
const USER = 'build-bot';
const PASSWORD = 'PROXYPASSdoNotLeak0123';
const BASIC = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
const SECRETS = [FAKE_HF_TOKEN, FAKE_SOURCE_TOKEN, PASSWORD, BASIC];
const HOSTS = { 'hub.proxied.test': '127.0.0.1', 'cdn.proxied.test': '127.0.0.2', 'models.proxied.test': '127.0.0.1' };

const certDir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-proxy-tls-'));
const cert = makeSelfSignedCert(certDir, '127.0.0.1', ['IP:127.0.0.2', 'IP:127.0.0.9', ...Object.keys(HOSTS).map((h) => `DNS:${h}`)]);
if (!cert) console.warn('proxy.test: openssl is not available; the TLS cases are skipped');

let hub: Hub;
let hubFront: TlsFront;
let cdnFront: TlsFront;
let files: ByteServer;
let sb: Sandbox;
let proxy: TestProxy | undefined;
/** The stand-in's own CDN origin (plain http), before any test points cdnOrigin at a TLS front. */
let plainCdn: string;
const model = makeSafetensors(300_000, 91);

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  plainCdn = hub.cdnOrigin;
  if (!cert) return;
  hubFront = await startTlsFront(cert, '127.0.0.1', { host: '127.0.0.1', port: Number(new URL(hub.endpoint).port) });
  cdnFront = await startTlsFront(cert, '127.0.0.2', { host: '127.0.0.2', port: Number(new URL(plainCdn).port) });
  files = await startByteServer({ tls: cert, files: { '/m.safetensors': model } });
});
afterAll(async () => {
  await Promise.all([hub?.close(), hubFront?.close(), cdnFront?.close(), files?.close()]);
  await rm(certDir, { recursive: true, force: true });
});
afterEach(async () => {
  hub.clearFaults();
  await proxy?.close();
  proxy = undefined;
  await sb?.cleanup();
});

const port = (origin: string): string => new URL(origin).port;

/** The Hub and its CDN as https origins: under the proxy-only names, or their own IPs. */
function useHttpsHub(byName: boolean): string {
  hub.cdnOrigin = byName ? `https://cdn.proxied.test:${port(cdnFront.origin)}` : cdnFront.origin;
  return byName ? `https://hub.proxied.test:${port(hubFront.origin)}` : hubFront.origin;
}

function env(extra: Record<string, string>): Record<string, string> {
  return sb.env({ NODE_EXTRA_CA_CERTS: cert?.certPath ?? '', MODELSYNC_LOG_LEVEL: 'debug', ...extra });
}

interface JsonReport {
  ok: boolean;
  entries: Array<{ state: string; error?: { code: string; message: string } }>;
}

function report(r: CliResult): JsonReport {
  return JSON.parse(r.stdout) as JsonReport;
}

async function expectNoSecrets(r: CliResult): Promise<void> {
  for (const s of SECRETS) expect(r.stdout + r.stderr).not.toContain(s);
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(await secretsInFiles([sb.state, sb.models], SECRETS)).toEqual([]);
}

describe.skipIf(!cert)('through a CONNECT proxy (https targets)', () => {
  it('a Hub model and an https file come entirely through an authenticating proxy: metadata, ranged bytes, TLS with SNI = the target', async () => {
    proxy = await startProxy({ auth: { user: USER, password: PASSWORD }, hosts: HOSTS });
    const endpoint = useHttpsHub(true);
    sb = await sandbox(endpoint);
    const m = addModel(hub, 9 * MiB);
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/m.safetensors' },
      { source: `https://models.proxied.test:${files.port}/m.safetensors`, dest: 'loras/f.safetensors', sha256: sha256(model) },
    ]);
    hub.resetStats();
    files.requests.length = 0;
    hubFront.servernames.length = 0;
    cdnFront.servernames.length = 0;
    const r = await runCli(['sync'], env({ HTTPS_PROXY: proxy.urlWith(USER, PASSWORD), MODELSYNC_HTTP_TOKENS: `models.proxied.test=${FAKE_SOURCE_TOKEN}` }));
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
    expect(await fileSha256(path.join(sb.models, 'loras/f.safetensors'))).toBe(sha256(model));

    const connects = proxy.requests.filter((q) => q.method === 'CONNECT');
    expect(connects.length).toBe(proxy.requests.length);
    expect(new Set(connects.map((q) => q.target.split(':')[0]))).toEqual(new Set(['hub.proxied.test', 'cdn.proxied.test', 'models.proxied.test']));
    // The proxy's credentials reach the proxy, and nothing else of ours does.
    expect(connects.every((q) => q.proxyAuthorization === `Basic ${BASIC}` && q.refusedWith === 0)).toBe(true);
    expect(connects.some((q) => q.headerNames.includes('authorization'))).toBe(false);
    expect(files.requests.every((q) => q.authorization === `Bearer ${FAKE_SOURCE_TOKEN}`)).toBe(true);
    expect(hub.stats.cdnRequestsWithAuth).toBe(0);
    expect(hub.stats.apiCalls).toBeGreaterThan(0);
    // TLS inside each tunnel names its own target; no tunnel carried another target's requests.
    expect(new Set(hubFront.servernames)).toEqual(new Set(['hub.proxied.test']));
    expect(new Set(cdnFront.servernames)).toEqual(new Set(['cdn.proxied.test']));
    expect(hub.stats.requests.filter((q) => q.host === 'hub').some((q) => q.url.startsWith('/blobs/'))).toBe(false);
    expect(hub.stats.requests.filter((q) => q.host === 'cdn').every((q) => q.url.startsWith('/blobs/'))).toBe(true);
    await expectNoSecrets(r);
  });

  it('one tunnel carries every chunk for its own target (kept alive, never reused for another)', async () => {
    proxy = await startProxy({ hosts: HOSTS });
    const endpoint = useHttpsHub(true);
    sb = await sandbox(endpoint);
    const m = addModel(hub, 12 * MiB);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync'], env({ HTTPS_PROXY: proxy.url, MODELSYNC_CONNECTIONS: '1' }));
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
    const cdnGets = hub.stats.requests.filter((q) => q.host === 'cdn' && q.method === 'GET');
    expect(cdnGets.length).toBeGreaterThanOrEqual(3);
    expect(proxy.requests.filter((q) => q.target.startsWith('cdn.proxied.test:')).length).toBe(1);
  });

  it('connections opened while the lookups run go through the proxy too, and carry every chunk (issue 15)', async () => {
    const p = await startProxy({ hosts: HOSTS });
    proxy = p;
    const endpoint = useHttpsHub(true);
    sb = await sandbox(endpoint);
    const a = addModel(hub, 8 * MiB);
    await sb.writeManifest([{ source: a.uri, dest: 'checkpoints/a.safetensors' }]);
    expect((await runCli(['sync'], env({ HTTPS_PROXY: p.url }))).code).toBe(0);
    const b = addModel(hub, 8 * MiB);
    await sb.writeManifest([
      { source: a.uri, dest: 'checkpoints/a.safetensors' },
      { source: b.uri, dest: 'checkpoints/b.safetensors' },
    ]);
    // The CDN's name resolves only inside the proxy: a connection that went around it could not open.
    const tunnels = (): number => p.requests.filter((q) => q.method === 'CONNECT' && q.target.startsWith('cdn.proxied.test:')).length;
    const before = tunnels();
    hub.resetStats();
    let release: () => void = () => undefined;
    hub.holdApi = new Promise<void>((r) => (release = r));
    const running = runCli(['sync'], env({ HTTPS_PROXY: p.url }));
    let atRelease: number;
    try {
      // Every connection the host starts with (half the default --connections), opened ahead.
      await waitFor('tunnels to the CDN while the API call is held', () => tunnels() - before >= startLevel(64) || undefined);
      expect(hub.stats.requests.filter((q) => q.host === 'cdn')).toEqual([]);
    } finally {
      atRelease = tunnels();
      hub.holdApi = undefined;
      release();
    }
    const r = await running;
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/b.safetensors'))).toBe(b.sha256);
    expect(hub.stats.requests.filter((q) => q.host === 'cdn').length).toBeGreaterThanOrEqual(2);
    // No tunnel opened after the lookups answered: every chunk came over one opened ahead.
    expect(tunnels()).toBe(atRelease);
  });

  it('an https:// proxy (TLS to the proxy, TLS to the target inside it) carries metadata and bytes alike', async () => {
    if (!cert) return;
    proxy = await startProxy({ tls: cert, auth: { user: USER, password: PASSWORD }, hosts: HOSTS });
    sb = await sandbox(useHttpsHub(true));
    const m = addModel(hub, 5 * MiB);
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/m.safetensors' },
      { source: `https://models.proxied.test:${files.port}/m.safetensors`, dest: 'loras/f.safetensors', sha256: sha256(model) },
    ]);
    const r = await runCli(['sync'], env({ HTTPS_PROXY: proxy.urlWith(USER, PASSWORD) }));
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
    expect(await fileSha256(path.join(sb.models, 'loras/f.safetensors'))).toBe(sha256(model));
    expect(proxy.requests.length).toBeGreaterThan(2);
    expect(proxy.requests.every((q) => q.method === 'CONNECT' && q.proxyAuthorization === `Basic ${BASIC}`)).toBe(true);
    await expectNoSecrets(r);
  });

  it('a proxy that wants credentials (407) fails in one line naming the proxy and HTTPS_PROXY; wrong ones the same', async () => {
    proxy = await startProxy({ auth: { user: USER, password: PASSWORD }, hosts: HOSTS });
    sb = await sandbox(useHttpsHub(true));
    const m = addModel(hub, 200_000);
    // A Hub entry (metadata calls, then the CDN) and a plain https file: both through the proxy.
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/m.safetensors' },
      { source: `https://models.proxied.test:${files.port}/m.safetensors`, dest: 'loras/f.safetensors', sha256: sha256(model) },
    ]);
    for (const url of [proxy.url, proxy.urlWith(USER, 'wrong-password-0123')]) {
      const r = await runCli(['sync', '--json'], env({ HTTPS_PROXY: url, MODELSYNC_RETRY_ATTEMPTS: '1' }));
      expect(r.code).toBe(1);
      for (const entry of report(r).entries) {
        const e = entry.error;
        expect(e?.code).toBe('E_PROXY');
        expect(e?.message).toContain(`proxy ${proxy.url} requires authentication (HTTP 407)`);
        expect(e?.message).toContain('HTTPS_PROXY');
        expect(e?.message).not.toContain('wrong-password');
      }
      expect(r.stdout + r.stderr).not.toContain('wrong-password');
    }
  });

  it('a CONNECT the proxy refuses (403) fails in one line naming the proxy and the target; nothing is published', async () => {
    proxy = await startProxy({ hosts: HOSTS, refuse: (t) => (t.startsWith('cdn.proxied.test:') ? 403 : undefined) });
    sb = await sandbox(useHttpsHub(true));
    const m = addModel(hub, 200_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    const r = await runCli(['sync', '--json'], env({ HTTPS_PROXY: proxy.url, MODELSYNC_RETRY_ATTEMPTS: '2' }));
    expect(r.code).toBe(1);
    const e = report(r).entries[0]?.error;
    expect(e?.code).toBe('E_PROXY');
    expect(e?.message).toMatch(new RegExp(`proxy ${proxy.url} refused to connect to cdn\\.proxied\\.test:\\d+ \\(HTTP 403`));
    expect(proxy.requests.some((q) => q.refusedWith === 403)).toBe(true);
    const human = await runCli(['sync'], env({ HTTPS_PROXY: proxy.url, MODELSYNC_RETRY_ATTEMPTS: '1' }));
    expect(human.code).toBe(1);
    expect(human.stdout.split('\n').filter((l) => l.includes('refused to connect')).length).toBe(1);
    expect(human.stderr).not.toContain('internal error');
  });

  it('a proxy nobody answers at fails in one line naming it, for the metadata calls and the bytes alike', async () => {
    const closed = await startProxy();
    const dead = closed.url;
    await closed.close();
    sb = await sandbox(useHttpsHub(true));
    const m = addModel(hub, 200_000);
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/m.safetensors' },
      { source: `https://models.proxied.test:${files.port}/m.safetensors`, dest: 'loras/f.safetensors', sha256: sha256(model) },
    ]);
    const r = await runCli(['sync', '--json'], env({ HTTPS_PROXY: `http://${USER}:${PASSWORD}@${dead.slice('http://'.length)}`, MODELSYNC_RETRY_ATTEMPTS: '1' }));
    expect(r.code).toBe(1);
    for (const e of report(r).entries) {
      expect(e.error?.code).toBe('E_PROXY');
      expect(e.error?.message).toContain(`cannot reach proxy ${dead} (ECONNREFUSED) from HTTPS_PROXY`);
    }
    await expectNoSecrets(r);
  });

  it('NO_PROXY: a listed IP, a CIDR and * go direct; the rest still through the proxy', async () => {
    const endpoint = useHttpsHub(false);
    for (const [noProxy, viaProxy] of [
      ['127.0.0.2', ['127.0.0.1']],
      ['example.org, 127.0.0.0/8', []],
      ['*', []],
    ] as const) {
      proxy = await startProxy();
      sb = await sandbox(endpoint);
      const m = addModel(hub, 200_000);
      await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
      const r = await runCli(['sync'], env({ HTTPS_PROXY: proxy.url, NO_PROXY: noProxy }));
      expect(r.code).toBe(0);
      expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
      expect([...new Set(proxy.requests.map((q) => q.target.split(':')[0]))]).toEqual(viaProxy);
      await proxy.close();
      proxy = undefined;
      await sb.cleanup();
    }
  });
});

describe('through an http proxy (http targets, absolute form)', () => {
  it('the plain-http Hub stand-in through HTTP_PROXY with credentials: every request is an absolute-form one to the proxy', async () => {
    proxy = await startProxy({ auth: { user: USER, password: PASSWORD } });
    hub.cdnOrigin = plainCdn;
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 5 * MiB);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    hub.resetStats();
    const r = await runCli(['sync'], sb.env({ HTTP_PROXY: proxy.urlWith(USER, PASSWORD), MODELSYNC_LOG_LEVEL: 'debug' }));
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
    expect(proxy.requests.length).toBe(hub.stats.requests.length);
    expect(proxy.requests.every((q) => q.method !== 'CONNECT' && /^http:\/\/127\.0\.0\.[12]:\d+\//.test(q.target) && q.proxyAuthorization === `Basic ${BASIC}`)).toBe(true);
    await expectNoSecrets(r);

    // Without credentials: the metadata call's 407 and a plain file's (absolute form, plain http).
    const plain = await startByteServer({ files: { '/m.safetensors': model } });
    try {
      await sb.writeManifest([
        { source: m.uri, dest: 'checkpoints/m.safetensors' },
        { source: `${plain.url}/m.safetensors`, dest: 'loras/p.safetensors', sha256: sha256(model) },
      ]);
      const noAuth = await runCli(['sync', '--json', '--refresh'], sb.env({ HTTP_PROXY: proxy.url, MODELSYNC_RETRY_ATTEMPTS: '1' }));
      expect(noAuth.code).toBe(1);
      for (const entry of report(noAuth).entries) {
        expect(entry.error?.code).toBe('E_PROXY');
        expect(entry.error?.message).toContain(`proxy ${proxy.url} requires authentication (HTTP 407)`);
        expect(entry.error?.message).toContain('HTTP_PROXY');
      }
      expect(plain.requests).toEqual([]);
    } finally {
      await plain.close();
    }
  });

  it('a proxy modelsync cannot speak to (SOCKS) is bad usage, exit 2, in one line without the credentials', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 100_000);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    const r = await runCli(['sync'], sb.env({ HTTPS_PROXY: `socks5://${USER}:${PASSWORD}@127.0.0.9:1080` }));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/HTTPS_PROXY: socks5:\/\/ proxies are not supported/);
    expect(r.stderr).not.toContain('internal error');
    await expectNoSecrets(r);
  });

  it('S3 through HTTP_PROXY (the AWS SDK with http-proxy-agent); NO_PROXY sends it direct', async () => {
    let s3: S3Fixture | undefined;
    try {
      s3 = await startS3(['proxied-bucket']);
      const body = makeSafetensors(400_000, 17);
      await s3.put('proxied-bucket', 'w/m.safetensors', body);
      for (const [noProxy, proxied] of [
        ['', true],
        ['127.0.0.1', false],
      ] as const) {
        proxy = await startProxy({ auth: { user: USER, password: PASSWORD } });
        sb = await sandbox();
        await sb.writeManifest([{ source: 's3://proxied-bucket/w/m.safetensors', dest: 'checkpoints/s.safetensors', sha256: sha256(body) }]);
        const r = await runCli(
          ['sync'],
          sb.env({ ...s3Env(s3, sb.dir), HTTP_PROXY: proxy.urlWith(USER, PASSWORD), NO_PROXY: noProxy }),
        );
        expect(r.stderr).not.toContain('internal error');
        expect(r.code).toBe(0);
        expect(await fileSha256(path.join(sb.models, 'checkpoints/s.safetensors'))).toBe(sha256(body));
        if (proxied) {
          expect(proxy.requests.length).toBeGreaterThan(0);
          expect(proxy.requests.every((q) => q.target.startsWith(`${s3?.endpoint ?? ''}/proxied-bucket/`) && q.proxyAuthorization === `Basic ${BASIC}`)).toBe(true);
        } else expect(proxy.requests).toEqual([]);
        await expectNoSecrets(r);
        await proxy.close();
        proxy = undefined;
        await sb.cleanup();
      }
    } finally {
      await s3?.close();
    }
  });
});
