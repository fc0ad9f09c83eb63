/**
 * hostile-world.md, secrets: a realistic sync with every kind of credential set (HF_TOKEN for a
 * private repo, a bearer token for an https host, AWS keys in the environment, signed URLs from a
 * redirect and one pasted into the manifest), with retries forced so that URLs get logged; then
 * every output, log line, state file (the SQLite bytes too) and store file is scanned.
 * The ComfyUI child's argv and environment are the daemon's tests (test/daemon*.test.ts).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ALL_FAKE_SECRETS, FAKE_HF_TOKEN, FAKE_SOURCE_TOKEN, runCli, sandbox, type CliResult, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { makeSafetensors, startHub, type Hub } from '../support/hub.js';
import { addModel, fileSha256, sha256 } from '../support/models.js';

const REDIRECT_SIG = 'REDIRECTSIGdoNotLeak0123456789';
const MANIFEST_SIG = 'MANIFESTSIGdoNotLeak0123456789';
const SECRETS = [...ALL_FAKE_SECRETS, REDIRECT_SIG, MANIFEST_SIG];
/** Query parameters of signed URLs (CloudFront, S3 presigned): none may reach any output. */
const SIGNED_QUERY = /Signature=|X-Amz-|Expires=|Key-Pair-Id|sig=/;

const viaRedirect = makeSafetensors(300_000, 91);
const withToken = makeSafetensors(200_000, 92);
const presigned = makeSafetensors(150_000, 93);

let hub: Hub;
let origin: ByteServer;
let storage: ByteServer;
let sb: Sandbox;

beforeAll(async () => {
  hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  // Signed-URL storage on another host: the first request of each file fails, so a retry logs its URL.
  const failedOnce = new Set<string>();
  storage = await startByteServer({
    host: '127.0.0.2',
    files: { '/blob/1': viaRedirect, '/direct.safetensors': presigned },
    intercept: (req) => {
      if (failedOnce.has(req.path)) return undefined;
      failedOnce.add(req.path);
      return 503;
    },
  });
  const query = `X-Amz-Credential=AKIATESTDONOTLEAK%2F20260101&X-Amz-Signature=${REDIRECT_SIG}&Expires=1999999999`;
  origin = await startByteServer({
    files: { '/files/t.safetensors': withToken },
    redirects: { '/api/download/1': `${storage.url}/blob/1?${query}` },
    intercept: (req) => (req.authorization === `Bearer ${FAKE_SOURCE_TOKEN}` ? undefined : 401),
  });
});
afterAll(async () => {
  await Promise.all([hub.close(), origin.close(), storage.close()]);
});
afterEach(async () => {
  await sb?.cleanup();
});

/** Every file under `dir`, its bytes read raw (the SQLite DB and its WAL included). */
async function filesContaining(dir: string, needles: readonly string[]): Promise<string[]> {
  const hits: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const p = path.join(e.parentPath, e.name);
    const text = (await readFile(p)).toString('latin1');
    for (const n of needles) if (text.includes(n)) hits.push(`${path.relative(sb.dir, p)}: ${n}`);
  }
  return hits;
}

describe('secret hygiene (hostile-world.md, secrets)', () => {
  it('no token, key or URL signature reaches any output, log, state DB or store file', async () => {
    sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 400_000, { private: true });
    // A CDN 503 and an expired signed URL: the retries log CDN URLs.
    hub.setFaults(m.sha256, { status503: 1, cdnExpire: { times: 1 } });
    await sb.writeManifest([
      { source: m.uri, dest: 'checkpoints/private.safetensors' },
      { source: `${origin.url}/api/download/1`, dest: 'loras/redirected.safetensors', sha256: sha256(viaRedirect) },
      { source: `${origin.url}/files/t.safetensors`, dest: 'loras/token.safetensors', sha256: sha256(withToken) },
      { source: `${storage.url}/direct.safetensors?X-Amz-Signature=${MANIFEST_SIG}&X-Amz-Expires=3600`, dest: 'vae/presigned.safetensors', sha256: sha256(presigned) },
    ]);
    const env = sb.env({ MODELSYNC_HTTP_TOKENS: `127.0.0.1=${FAKE_SOURCE_TOKEN}`, MODELSYNC_LOG_LEVEL: 'debug' });
    const runs: CliResult[] = [];
    const sync = await runCli(['sync'], env);
    runs.push(sync);
    expect(sync.code, sync.stdout + sync.stderr).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/private.safetensors'))).toBe(m.sha256);
    for (const cmd of [['sync', '--json'], ['status', '--json'], ['verify', '--full', '--json'], ['plan', '--json']]) {
      const r = await runCli(cmd, env);
      expect(r.code, `${cmd.join(' ')}: ${r.stdout}${r.stderr}`).toBe(0);
      runs.push(r);
    }
    // Failures carry URLs and hosts in their messages too.
    const denied = await runCli(['sync'], sb.env({ MODELSYNC_HTTP_TOKENS: `127.0.0.1=${FAKE_SOURCE_TOKEN}x`, HF_TOKEN: `${FAKE_HF_TOKEN}x`, MODELSYNC_STATE_DIR: path.join(sb.dir, 'state2'), MODELSYNC_LOG_LEVEL: 'debug' }));
    expect(denied.code).toBe(1);
    runs.push(denied);

    // The retries really logged URLs, and only in redacted form.
    expect(sync.stderr).toMatch(/retrying/);
    expect(sync.stderr).toMatch(/127\.0\.0\.2:\d+\/[^"\s]*\?<redacted>/);
    const all = runs.flatMap((r) => [r.stdout, r.stderr]).join('\n');
    expect(SECRETS.filter((s) => all.includes(s))).toEqual([]);
    expect(all).not.toMatch(SIGNED_QUERY);
    expect(await filesContaining(sb.state, [...SECRETS, 'Signature='])).toEqual([]);
    expect(await filesContaining(path.join(sb.dir, 'state2'), [...SECRETS, 'Signature='])).toEqual([]);
    expect(await filesContaining(sb.models, [...SECRETS, 'Signature='])).toEqual([]);
    // Credentials went only where they belong.
    expect(hub.stats.cdnRequestsWithAuth).toBe(0);
    expect(storage.requests.every((q) => q.authorization === undefined)).toBe(true);
  });
});
