import { mkdir, readdir } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli, sandbox, type Sandbox } from './support/cli.js';
import { makeSafetensors } from './support/hub.js';
import { fileSha256, sha256 } from './support/models.js';
import { secretsInFiles } from './support/scan-secrets.js';

const ORIGIN_TOKEN = 'ORIGINTOKENdoNotLeak0123456789';
const CDN_TOKEN = 'CDNTOKENdoNotLeak0123456789';
const CIVITAI = 'CIVITAITOKENdoNotLeak0123456789';
const SIGNATURE = 'SIGNEDQUERYdoNotLeak42';
const EVIL = 'attachment; filename="../../evil.safetensors"';

interface Seen {
  readonly host: 'origin' | 'cdn';
  readonly url: string;
  readonly authorization: string | undefined;
}

const model = makeSafetensors(600 * 1024, 31);
const direct = makeSafetensors(90 * 1024, 32);
let origin: Server;
let cdn: Server;
let originUrl = '';
let cdnUrl = '';
let seen: Seen[] = [];
/** The CDN request (1-based) answered 503 instead; 0 for none. */
let cdnFailAt = 0;
let sb: Sandbox;

/** Bytes with Range support, and a Content-Disposition that tries to climb out of the models dir. */
function sendBytes(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const headers = { 'content-disposition': EVIL, 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' };
  if (!m) {
    res.writeHead(200, { ...headers, 'content-length': body.length });
    res.end(body);
    return;
  }
  const start = Number(m[1]);
  const end = Math.min(m[2] ? Number(m[2]) : body.length - 1, body.length - 1);
  res.writeHead(206, { ...headers, 'content-length': end + 1 - start, 'content-range': `bytes ${start}-${end}/${body.length}` });
  res.end(body.subarray(start, end + 1));
}

function listen(server: Server, host: string): Promise<string> {
  return new Promise((resolve) => server.listen(0, host, () => resolve(`http://${host}:${(server.address() as AddressInfo).port}`)));
}

beforeAll(async () => {
  origin = createServer((req, res) => {
    seen.push({ host: 'origin', url: req.url ?? '', authorization: req.headers.authorization });
    if (req.headers.authorization !== `Bearer ${ORIGIN_TOKEN}`) {
      res.writeHead(401).end();
      return;
    }
    // Like Civitai: the API answers with a redirect to a signed URL on a storage host.
    if (req.url === '/api/download/models/1') {
      res.writeHead(302, { location: `${cdnUrl}/blob/model?sig=${SIGNATURE}`, 'content-disposition': EVIL }).end();
      return;
    }
    if (req.url === '/files/direct.safetensors') return sendBytes(req, res, direct);
    res.writeHead(404).end();
  });
  cdn = createServer((req, res) => {
    seen.push({ host: 'cdn', url: req.url ?? '', authorization: req.headers.authorization });
    if (seen.filter((s) => s.host === 'cdn').length === cdnFailAt) {
      res.writeHead(503).end();
      return;
    }
    sendBytes(req, res, model);
  });
  originUrl = await listen(origin, '127.0.0.1');
  cdnUrl = await listen(cdn, '127.0.0.2');
});
afterAll(async () => {
  await Promise.all([origin, cdn].map((s) => new Promise((r) => s.close(r))));
});
beforeEach(async () => {
  sb = await sandbox();
  seen = [];
  cdnFailAt = 0;
});
afterEach(async () => {
  await sb.cleanup();
});

async function filesNamed(dir: string, re: RegExp): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (re.test(d.name)) out.push(path.join(d.parentPath, d.name));
  }
  return out;
}

describe('https:// sources with tokens by host', () => {
  it("sends a host's token to that host only, drops it on a redirect elsewhere, and never uses Content-Disposition", async () => {
    // The first CDN request is the size probe; the third is a chunk, whose retry is logged.
    cdnFailAt = 3;
    await sb.writeManifest([
      { source: `${originUrl}/api/download/models/1`, dest: 'loras/style.safetensors', sha256: sha256(model) },
      { source: `${originUrl}/files/direct.safetensors`, dest: 'checkpoints/direct.safetensors', sha256: sha256(direct), size: direct.length },
    ]);
    // Every directory the run writes in or starts from (cwd, HOME, models dir, store, state) sits
    // two levels below the sandbox, so a "../../" taken from any of them still lands inside the
    // sandbox, where it is looked for: nothing outside it is ever scanned.
    const jail = path.join(sb.dir, 'a', 'b');
    const models = path.join(jail, 'models');
    await mkdir(models, { recursive: true });
    const env = sb.env({
      HOME: jail,
      MODELSYNC_MODELS_DIR: models,
      MODELSYNC_STATE_DIR: path.join(jail, 'state'),
      MODELSYNC_HTTP_TOKENS: `127.0.0.1=${ORIGIN_TOKEN},127.0.0.2=${CDN_TOKEN}`,
      CIVITAI_TOKEN: CIVITAI,
    });
    const r = await runCli(['sync', '--chunk-size', '128K', '--connections', '3'], env, { cwd: jail });
    expect(r.stdout).not.toContain('FAILED');
    expect(r.code).toBe(0);
    expect(await fileSha256(path.join(models, 'loras', 'style.safetensors'))).toBe(sha256(model));
    expect(await fileSha256(path.join(models, 'checkpoints', 'direct.safetensors'))).toBe(sha256(direct));

    const originSeen = seen.filter((s) => s.host === 'origin');
    const cdnSeen = seen.filter((s) => s.host === 'cdn');
    expect(originSeen.length).toBeGreaterThan(1);
    expect(originSeen.every((s) => s.authorization === `Bearer ${ORIGIN_TOKEN}`)).toBe(true);
    expect(cdnSeen.length).toBeGreaterThan(1);
    expect(cdnSeen.every((s) => s.authorization === undefined)).toBe(true);

    // The 503 from the CDN was logged with its signed query redacted.
    expect(r.stderr).toContain('retrying');
    expect(r.stderr).toContain('/blob/model?<redacted>');
    expect(r.stderr).not.toContain(SIGNATURE);
    for (const secret of [ORIGIN_TOKEN, CDN_TOKEN, CIVITAI]) expect(r.stdout + r.stderr).not.toContain(secret);
    expect(await secretsInFiles([sb.dir], [ORIGIN_TOKEN, CDN_TOKEN, CIVITAI, SIGNATURE])).toEqual([]);

    expect(await filesNamed(sb.dir, /evil/)).toEqual([]);
  });

  it('sends no token to a host it was not configured for, and says which variable to set', async () => {
    await sb.writeManifest([{ source: `${originUrl}/files/direct.safetensors`, dest: 'checkpoints/direct.safetensors', sha256: sha256(direct) }]);
    const r = await runCli(['sync'], sb.env({ MODELSYNC_HTTP_TOKENS: `127.0.0.2=${CDN_TOKEN}`, CIVITAI_TOKEN: CIVITAI }));
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('HTTP 401; set a token for 127.0.0.1 in MODELSYNC_HTTP_TOKENS');
    expect(seen.every((s) => s.authorization === undefined)).toBe(true);
    for (const secret of [CDN_TOKEN, CIVITAI]) expect(r.stdout + r.stderr).not.toContain(secret);
  });
});
