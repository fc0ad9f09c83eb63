/**
 * Issue 13, class 8, for uploads: every upload request to an S3 mirror (mirror_write's
 * write-back, `modelsync mirror push`) has a deadline in rate as well as in idleness. An
 * endpoint that reads the body in bursts just inside the idle timeout is never cut by it; the
 * minimum rate counts the body as the socket takes it and cuts the request (E_TOO_SLOW, naming
 * the host), for a single PutObject and for a multipart upload's parts alike; an answer whose
 * body trickles is cut the same way; a healthy upload, and the wait for an answer once the
 * whole body is sent, pass.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { leakedSecrets, runCli, type CliResult, type Sandbox } from '../support/cli.js';
import { useHubSandbox } from '../support/hub-sandbox.js';
import { logRecords } from '../support/json-lines.js';
import { addModel, fileSha256 } from '../support/models.js';
import { s3Env, useS3 } from '../support/s3-fixture.js';

const BUCKET = 'upload-rate';
const PREFIX = 'm/';
const MIRROR = `s3://${BUCKET}/${PREFIX}`;
const MiB = 1024 * 1024;
/**
 * One-second windows keep the tests short (the rule is the same at the default 60 s); the idle
 * timeout is a minute, so that only the rate can be what cuts. 256 KiB/s is far below loopback.
 */
const FLOOR = {
  MODELSYNC_MIN_RATE: '256K',
  MODELSYNC_MIN_RATE_WINDOW: '1',
  MODELSYNC_IDLE_TIMEOUT_MS: '60000',
  MODELSYNC_RETRY_ATTEMPTS: '2',
  MODELSYNC_RETRY_BASE_MS: '10',
};

const { hub, sandbox } = await useHubSandbox();
const s3 = await useS3([BUCKET]);
const slow = await startSlowS3();
afterAll(async () => {
  await slow.close();
});
afterEach(() => {
  slow.requests.length = 0;
  slow.answerDelayMs = undefined;
  slow.trickleAnswers = false;
});

function env(sb: Sandbox, endpoint: string): Record<string, string> {
  return sb.env({ ...s3Env({ endpoint }, sb.dir), ...FLOOR });
}

async function cli(args: string[], e: Record<string, string>): Promise<CliResult> {
  const r = await runCli(args, e, { timeoutMs: 45_000 });
  expect(r.signal, 'killed by the test timeout: the upload was never cut off').toBeNull();
  expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  expect(r.stdout + r.stderr).not.toContain('internal error');
  return r;
}

interface Pushed {
  ok: boolean;
  uploaded: number;
  failed: number;
  blobs: { key: string; outcome: string; error?: { code: string; message: string } }[];
}

describe('every upload has a deadline in rate (issue 13, class 8)', () => {
  it('write-back during a sync: a single PutObject read in bursts is cut by the minimum rate, naming the host; a warning, and the sync succeeds', async () => {
    // Under lib-storage's 8 MiB part: one PutObject, its body handed over as one Buffer.
    const m = addModel(hub, 7 * MiB);
    const sb = await sandbox(hub.endpoint);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirror_write: MIRROR });
    const r = await cli(['sync', '--json'], env(sb, slow.endpoint));
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ uploaded: 0, failed: 1 });
    const warned = logRecords(r.stderr).filter((l) => l.level === 40 && l.mirror === MIRROR);
    expect(warned.map((l) => l.code)).toEqual(['E_TOO_SLOW']);
    expect(String(warned[0]?.err)).toContain(`127.0.0.1:${slow.port} took`);
    // Retried after the cut, and the retries end: one PutObject per attempt, no multipart.
    expect(slow.requests.filter((q) => q.method === 'PUT' && !q.query.has('partNumber'))).toHaveLength(2);
    expect(slow.requests.some((q) => q.query.has('uploads'))).toBe(false);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/m.safetensors'))).toBe(m.sha256);
  });

  /** `mirror push` of `m` to the slow endpoint: exit 1, that one blob failed with E_TOO_SLOW. */
  async function pushCut(m: { uri: string }): Promise<Pushed> {
    const sb = await sandbox(hub.endpoint);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }]);
    const r = await cli(['mirror', 'push', '--to', MIRROR, '--json'], env(sb, slow.endpoint));
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout) as Pushed;
    expect(rep).toMatchObject({ ok: false, uploaded: 0, failed: 1 });
    expect(rep.blobs[0]?.error?.code).toBe('E_TOO_SLOW');
    return rep;
  }

  it('mirror push: a multipart upload whose part is read in bursts is cut the same way; that blob fails (exit 1) and the upload is aborted', async () => {
    // Over the 8 MiB part: CreateMultipartUpload, then UploadPart.
    const m = addModel(hub, 9 * MiB);
    const rep = await pushCut(m);
    expect(rep.blobs[0]?.error?.message).toContain(`127.0.0.1:${slow.port} took`);
    const parts = slow.requests.filter((q) => q.method === 'PUT' && q.query.has('partNumber'));
    expect(parts.length).toBe(2);
    expect(parts.every((q) => q.query.get('partNumber') === '1')).toBe(true);
    // Each cut multipart upload was aborted (no parts left billed), none completed.
    expect(slow.requests.filter((q) => q.method === 'POST' && q.query.has('uploads'))).toHaveLength(2);
    expect(slow.requests.filter((q) => q.method === 'DELETE' && q.query.has('uploadId'))).toHaveLength(2);
    expect(slow.requests.some((q) => q.method === 'POST' && q.query.has('uploadId'))).toBe(false);
  });

  it('mirror push: an answer whose body trickles (CreateMultipartUpload\'s XML) is cut by the minimum rate too; that blob fails', async () => {
    const m = addModel(hub, 9 * MiB);
    slow.trickleAnswers = true;
    const rep = await pushCut(m);
    expect(rep.blobs[0]?.error?.message).toContain(`127.0.0.1:${slow.port} sent`);
    // Cut at the answer to CreateMultipartUpload, each attempt: no part was ever sent.
    expect(slow.requests.filter((q) => q.method === 'POST' && q.query.has('uploads'))).toHaveLength(2);
    expect(slow.requests.some((q) => q.method === 'PUT')).toBe(false);
  });

  it('write-back: a PutObject answered at once but with a trickling body does not hold the sync', async () => {
    const m = addModel(hub, 300_000);
    slow.trickleAnswers = true;
    const sb = await sandbox(hub.endpoint);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirror_write: MIRROR });
    const r = await cli(['sync', '--json'], env(sb, slow.endpoint));
    expect(r.code).toBe(0);
  });

  it('the wait for the answer once the whole body is sent is not counted: an answer three windows late still uploads', async () => {
    const m = addModel(hub, 300_000);
    slow.answerDelayMs = 3_000;
    const sb = await sandbox(hub.endpoint);
    await sb.writeManifest([{ source: m.uri, dest: 'checkpoints/m.safetensors' }], { mirror_write: MIRROR });
    const r = await cli(['sync', '--json'], env(sb, slow.endpoint));
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ uploaded: 1, failed: 0 });
    expect(slow.requests.filter((q) => q.method === 'PUT')).toHaveLength(1);
  });

  it('a healthy S3 with the floor on: write-back of a small blob and mirror push of a multipart one both upload', async () => {
    const small = addModel(hub, 200_000);
    const big = addModel(hub, 9 * MiB);
    const sb = await sandbox(hub.endpoint);
    await sb.writeManifest([{ source: small.uri, dest: 'checkpoints/small.safetensors' }], { mirror_write: MIRROR });
    const r = await cli(['sync', '--json'], env(sb, s3.endpoint));
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { mirrorWrite: Record<string, number> }).mirrorWrite).toMatchObject({ uploaded: 1, failed: 0 });

    const pusher = await sandbox(hub.endpoint);
    await pusher.writeManifest([{ source: big.uri, dest: 'checkpoints/big.safetensors' }]);
    const p = await cli(['mirror', 'push', '--to', MIRROR, '--json'], env(pusher, s3.endpoint));
    expect(p.code).toBe(0);
    expect(JSON.parse(p.stdout) as Pushed).toMatchObject({ ok: true, uploaded: 1, failed: 0 });
    // Create, two parts, complete.
    expect(s3.requests.filter((q) => q.key === `${PREFIX}sha256/${big.sha256}` && (q.method === 'PUT' || q.method === 'POST'))).toHaveLength(4);
  });
});

interface SlowSeen {
  readonly method: string;
  readonly query: URLSearchParams;
}

interface SlowS3 {
  readonly endpoint: string;
  readonly port: number;
  readonly requests: SlowSeen[];
  /**
   * undefined: a body is read 16 KiB at a time, 400 ms apart (40 KiB/s, well inside the idle
   * timeout, never done in a test's time). A number: the body is read at full speed, and the
   * answer sent this long after its last byte.
   */
  answerDelayMs: number | undefined;
  /** Bodies read at full speed, but every answer's body (an XML document) trickled, 256 B every 200 ms. */
  trickleAnswers: boolean;
  close(): Promise<void>;
}

/** An S3 stand-in with no object ever (HEAD 404) that takes uploads as slowly as it likes. */
async function startSlowS3(): Promise<SlowS3> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://slow.invalid');
    fx.requests.push({ method: req.method ?? 'GET', query: url.searchParams });
    route(req, res, url);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const fx: SlowS3 = {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    requests: [],
    answerDelayMs: undefined,
    trickleAnswers: false,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };

  function route(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const xml = (body: string): void => {
      if (fx.trickleAnswers) return trickle(res, body);
      res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (req.method === 'HEAD') {
      res.writeHead(404, { 'content-length': 0 });
      res.end();
    } else if (req.method === 'POST' && url.searchParams.has('uploads')) {
      req.resume();
      xml('<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>slow-upload</UploadId></InitiateMultipartUploadResult>');
    } else if (req.method === 'DELETE') {
      req.resume();
      res.writeHead(204);
      res.end();
    } else if (req.method === 'PUT') {
      takeBody(req, res);
    } else {
      req.resume();
      res.writeHead(400, { 'content-length': 0 });
      res.end();
    }
  }

  function takeBody(req: IncomingMessage, res: ServerResponse): void {
    const answer = (): void => {
      if (fx.trickleAnswers) return trickle(res, '<?xml version="1.0" encoding="UTF-8"?><PutObjectResult></PutObjectResult>', { etag: '"0123456789abcdef0123456789abcdef"' });
      res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"', 'content-length': 0 });
      res.end();
    };
    const delay = fx.answerDelayMs ?? (fx.trickleAnswers ? 0 : undefined);
    if (delay !== undefined) {
      req.resume();
      req.once('end', () => setTimeout(answer, delay));
      return;
    }
    // Paused mode: the request's buffer fills, then the socket's, then the client waits.
    const burst = setInterval(() => req.read(Math.min(16 * 1024, req.readableLength)), 400);
    req.once('end', () => {
      clearInterval(burst);
      answer();
    });
    req.once('close', () => clearInterval(burst));
  }
  return fx;
}

/** A valid XML answer, led by a megabyte of whitespace sent 256 B every 200 ms (1.3 KB/s: ten minutes). */
function trickle(res: ServerResponse, xml: string, headers: Record<string, string> = {}): void {
  const body = Buffer.concat([Buffer.alloc(1024 * 1024, 0x20), Buffer.from(xml)]);
  res.writeHead(200, { 'content-type': 'application/xml', 'content-length': body.length, ...headers });
  let at = 0;
  const tick = setInterval(() => {
    res.write(body.subarray(at, at + 256));
    at += 256;
    if (at >= body.length) {
      clearInterval(tick);
      res.end();
    }
  }, 200);
  res.once('close', () => clearInterval(tick));
}
