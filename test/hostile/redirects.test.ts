/**
 * Issue 13, class 14: redirects keep the scheme policy. A source may be redirected to https://
 * anywhere, and to plain http:// only on loopback (or on the origin it came from); never to
 * another scheme, a URL with credentials in it, or something that is not a URL. This holds for
 * https:// sources, the Hub's resolve redirects, the Hub's metadata API, S3 (whose SDK must
 * not follow redirects at all), and the sources written since: Civitai's download redirect to
 * its storage host, and https:// mirrors (a refused redirect there falls through to the origin). "Elsewhere" is a server on this machine's first non-loopback
 * IPv4 address, so a followed redirect is seen; without one, a name that cannot resolve stands in
 * (today's code then fails with a DNS error instead of the policy's code).
 */
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, FAKE_SOURCE_TOKEN, leakedSecrets, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { startCivitai } from '../support/civitai.js';
import { makeSafetensors, startHub, type Hub } from '../support/hub.js';
import { addModel, exists, fileSha256, sha256 } from '../support/models.js';
import { s3Env, startS3, type S3Fixture } from '../support/s3-fixture.js';

const model = makeSafetensors(50_000, 1414);
const outside = Object.values(os.networkInterfaces())
  .flat()
  .find((i) => i !== undefined && i.family === 'IPv4' && !i.internal)?.address;

let elsewhere: ByteServer | undefined;
let loop2: ByteServer;
let origin: ByteServer;
let hub: Hub;
let s3: S3Fixture;
let sb: Sandbox;
let elsewhereUrl: string;

beforeAll(async () => {
  if (outside !== undefined) elsewhere = await startByteServer({ host: outside, files: { '/m.safetensors': model } });
  elsewhereUrl = elsewhere ? `${elsewhere.url}/m.safetensors` : 'http://modelsync-elsewhere.invalid/m.safetensors';
  loop2 = await startByteServer({ host: '127.0.0.2', files: { '/m.safetensors': model } });
  origin = await startByteServer({
    files: { '/m.safetensors': model },
    redirects: {
      '/to-plain-elsewhere': elsewhereUrl,
      '/to-ftp': 'ftp://127.0.0.2/m.safetensors',
      '/to-file': 'file:///etc/passwd',
      '/to-data': 'data:application/octet-stream;base64,AAAA',
      '/with-userinfo': `http://user:hunter2@127.0.0.2:${loop2.port}/m.safetensors`,
      '/not-a-url': 'http://[::1',
      '/bad-port': 'http://127.0.0.2:99999/m.safetensors',
      '/to-loopback': `${loop2.url}/m.safetensors`,
      '/to-same-origin': '/m.safetensors',
    },
  });
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  s3 = await startS3(['redirecting']);
});
afterAll(async () => {
  await Promise.all([elsewhere?.close(), loop2.close(), origin.close(), hub.close(), s3.close()]);
});
afterEach(async () => {
  hub.clearFaults();
  hub.apiRedirect = undefined;
  await sb?.cleanup();
});

interface Report {
  entries: { state: string; error?: { code: string; message: string } }[];
}

type ExtraEnv = Record<string, string> | ((dir: string) => Record<string, string>);

async function syncJson(entries: Record<string, unknown>[], env: ExtraEnv = {}, endpoint?: string, manifestKeys: Record<string, unknown> = {}): Promise<{ r: CliResult; report: Report }> {
  sb = await sandbox(endpoint);
  await sb.writeManifest(entries, manifestKeys);
  const extra = typeof env === 'function' ? env(sb.dir) : env;
  const r = await runCli(['sync', '--json'], sb.env({ MODELSYNC_HTTP_TOKENS: `127.0.0.1=${FAKE_SOURCE_TOKEN}`, MODELSYNC_RETRY_ATTEMPTS: '2', ...extra }), { timeoutMs: 30_000 });
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stdout + r.stderr).not.toContain('internal error');
  expect(r.stdout + r.stderr).not.toContain('hunter2');
  return { r, report: JSON.parse(r.stdout) as Report };
}

const httpsEntry = (p: string): Record<string, unknown> => ({ source: `${origin.url}${p}`, dest: 'checkpoints/r.safetensors', sha256: sha256(model), size: model.length });

function seenElsewhere(): number {
  return elsewhere?.requests.length ?? 0;
}

describe('redirects keep the scheme policy (issue 13, class 14)', () => {
  it('a loopback http:// source redirecting to plain http:// on another host is refused, and that host is never asked', async () => {
    const before = seenElsewhere();
    const { r, report } = await syncJson([httpsEntry('/to-plain-elsewhere')]);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_INSECURE_REDIRECT');
    expect(seenElsewhere() - before).toBe(0);
    expect(await exists(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(false);
  });

  it.each(['/to-ftp', '/to-file', '/to-data', '/with-userinfo', '/not-a-url', '/bad-port'])('a redirect %s (another scheme, credentials, not a URL) is refused with one clear error', async (p) => {
    const before = loop2.requests.length;
    const { r, report } = await syncJson([httpsEntry(p)]);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_REDIRECT');
    // Refused, not retried: one request to the redirecting server, none to where it pointed.
    expect(origin.requests.filter((q) => q.path === p)).toHaveLength(1);
    expect(loop2.requests.length - before).toBe(0);
  });

  it('redirects to loopback http:// and within one origin are still followed, and the token stays home', async () => {
    const { r, report } = await syncJson([httpsEntry('/to-loopback'), { ...httpsEntry('/to-same-origin'), dest: 'checkpoints/s.safetensors' }]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(report.entries.map((e) => e.state)).toEqual(['published', 'published']);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(sha256(model));
    expect(loop2.requests.every((q) => q.authorization === undefined)).toBe(true);
  });

  it("the Hub's resolve redirect to plain http:// elsewhere is refused", async () => {
    const m = addModel(hub, 200_000);
    hub.setFaults(m.sha256, { resolveRedirect: elsewhereUrl });
    const before = seenElsewhere();
    const { r, report } = await syncJson([{ source: m.uri, dest: 'checkpoints/h.safetensors' }], {}, hub.endpoint);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_INSECURE_REDIRECT');
    expect(seenElsewhere() - before).toBe(0);
  });

  it("the Hub's metadata API redirecting to plain http:// elsewhere is refused (the token never leaves)", async () => {
    const m = addModel(hub, 20_000);
    hub.apiRedirect = elsewhere?.url ?? 'http://modelsync-elsewhere.invalid';
    const before = seenElsewhere();
    const { r, report } = await syncJson([{ source: m.uri, dest: 'checkpoints/h.safetensors' }], {}, hub.endpoint);
    expect(r.code).toBe(1);
    expect(report.entries[0]?.error?.code).toBe('E_INSECURE_REDIRECT');
    expect(seenElsewhere() - before).toBe(0);
  });

  it("Civitai's download redirect to plain http:// elsewhere is refused; the token never leaves", async () => {
    const civitai = await startCivitai();
    try {
      const token = 'civitai-redirect-token-0123456789';
      civitai.tokens.add(token);
      civitai.add({ id: 4242, modelId: 42, modelType: 'LORA', files: [{ name: 'l.safetensors', content: model }] });
      civitai.storageRedirect = elsewhereUrl;
      const before = seenElsewhere();
      const { r, report } = await syncJson([{ source: 'civitai://4242', dest: 'loras/l.safetensors' }], { CIVITAI_ENDPOINT: civitai.endpoint, CIVITAI_TOKEN: token });
      expect(r.code).toBe(1);
      expect(report.entries[0]?.error?.code).toBe('E_INSECURE_REDIRECT');
      expect(seenElsewhere() - before).toBe(0);
      expect(r.stdout + r.stderr).not.toContain(token);
      expect(await exists(path.join(sb.models, 'loras/l.safetensors'))).toBe(false);
    } finally {
      await civitai.close();
    }
  });

  it('an https:// mirror redirecting to plain http:// elsewhere is refused: that host is never asked, the origin serves', async () => {
    const mirror = await startByteServer({ files: {}, redirects: { [`/mir/sha256/${sha256(model)}`]: elsewhereUrl } });
    try {
      const before = seenElsewhere();
      const { r, report } = await syncJson([httpsEntry('/m.safetensors')], {}, undefined, { mirrors: [`${mirror.url}/mir/`] });
      expect(r.code).toBe(0);
      expect(report.entries[0]?.state).toBe('published');
      expect(await fileSha256(path.join(sb.models, 'checkpoints/r.safetensors'))).toBe(sha256(model));
      expect(mirror.requests.length).toBeGreaterThan(0);
      expect(seenElsewhere() - before).toBe(0);
      expect(r.stderr).toContain('E_INSECURE_REDIRECT');
    } finally {
      await mirror.close();
    }
  });

  it('S3 answering with a redirect elsewhere is not followed (the SDK follows none)', async () => {
    for (const status of [301, 307]) {
      s3.failBucket.set('redirecting', { status, code: status === 301 ? 'PermanentRedirect' : 'TemporaryRedirect', headers: { location: elsewhereUrl } });
      const before = seenElsewhere();
      const { r, report } = await syncJson([{ source: 's3://redirecting/m.safetensors', dest: 'checkpoints/s3.safetensors', sha256: sha256(model) }], (dir) => s3Env(s3, dir));
      expect(r.code).toBe(1);
      expect(report.entries[0]?.state).toBe('failed');
      expect(seenElsewhere() - before).toBe(0);
      await sb.cleanup();
    }
  });
});
