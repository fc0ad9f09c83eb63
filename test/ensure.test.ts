/**
 * `modelsync ensure`: the CLI side of models on demand, against a real `modelsync run` with an
 * on-demand policy and the Hub stand-in (plus S3, https and Civitai stand-ins), and against fake
 * daemons that answer garbage.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startByteServer } from './support/byte-server.js';
import { startCivitai } from './support/civitai.js';
import { BIN, REPO_ROOT, leakedSecrets, runCli, type CliResult, type Sandbox } from './support/cli.js';
import { freePort, killAll, startRun, waitFor, type RunningDaemon } from './support/daemon-harness.js';
import { useHubSandbox } from './support/hub-sandbox.js';
import { addModel, exists, fileSha256, sha256 } from './support/models.js';
import { s3Env, startS3 } from './support/s3-fixture.js';
import { makeSafetensors } from './support/safetensors.js';

const { hub, sandbox } = await useHubSandbox();
const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures');

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await killAll();
  for (const c of closers.splice(0)) await c();
});

const policy = (allow: string[], extra: Record<string, unknown> = {}): Record<string, unknown> => ({ on_demand: { allow, max_bytes: '1G', ...extra } });

/** A daemon with this on-demand policy, its control API answering. */
async function daemon(sb: Sandbox, onDemand: Record<string, unknown>, env: Record<string, string> = {}): Promise<{ d: RunningDaemon; control: string }> {
  await sb.writeManifest([], onDemand);
  const port = await freePort();
  const d = startRun([], sb.env(env), port);
  await waitFor('the control API', async () => (await d.get('/readyz'))?.status === 200);
  return { d, control: `127.0.0.1:${port}` };
}

function ensure(control: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCli(['ensure', '--control', control, ...args], { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env });
}

const lines = (text: string): string[] => text.split('\n').filter((l) => l !== '');
const cdnGets = (sha: string): number => hub.stats.requests.filter((r) => r.host === 'cdn' && r.method === 'GET' && r.url.includes(sha)).length;

describe('modelsync ensure ENTRY...', () => {
  it('SOURCE=DEST from the Hub: fetched, verified, published; a line per state change on stderr, the summary on stdout; asked again: ready at once, nothing downloaded', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 600_000);
    hub.setFaults(m.sha256, { bytesPerSecond: 600_000 });
    const { control } = await daemon(sb, policy([`hf://${m.repo}@*`]));
    const r = await ensure(control, [`${m.uri}=loras/style.safetensors`]);
    expect(r.code, r.stderr).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'loras/style.safetensors'))).toBe(m.sha256);
    const states = lines(r.stderr).map((l) => l.split(/\s+/)[0]);
    expect(states[0]).toBe('queued');
    expect(states).toContain('downloading');
    expect(states.at(-1)).toBe('ready');
    expect(lines(r.stderr).every((l) => l.includes('loras/style.safetensors'))).toBe(true);
    expect(lines(r.stdout)).toEqual([expect.stringMatching(/^ready +loras\/style\.safetensors \(/), expect.stringMatching(/^1\/1 ready \(job [A-Za-z0-9_-]+\)$/)]);

    hub.clearFaults();
    hub.resetStats();
    const again = await ensure(control, [`${m.uri}=loras/style.safetensors`]);
    expect(again.code, again.stderr).toBe(0);
    expect(lines(again.stderr).map((l) => l.split(/\s+/)[0])).toEqual(['ready']);
    expect(cdnGets(m.sha256)).toBe(0);
    expect(leakedSecrets(r.stdout, r.stderr, again.stdout, again.stderr)).toEqual([]);
  });

  it('a Hub resolve URL with a FOLDER/ dest: named after its file, read as hf:// (the Hub verifies it, hf:// globs apply); --json prints the job', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 50_000);
    const { control } = await daemon(sb, policy([`hf://${m.repo}@*`]));
    const r = await ensure(control, ['--json', `${hub.endpoint}/${m.repo}/resolve/main/${m.path}?download=true=vae/`]);
    expect(r.code, r.stderr).toBe(0);
    const job = JSON.parse(r.stdout) as { id: string; done: boolean; ok: boolean; models: { dest: string; source: string; state: string; bytes: number }[] };
    expect(job).toMatchObject({ done: true, ok: true, models: [{ dest: `vae/${m.path}`, source: `hf://${m.repo}@main/${m.path}`, state: 'ready', bytes: m.content.length }] });
    expect(await fileSha256(path.join(sb.models, 'vae', m.path))).toBe(m.sha256);
  });

  it('s3:// and https:// sources with #sha256:, and a Civitai version alone (its own file name)', async () => {
    const sb = await sandbox(hub.endpoint);
    const s3 = await startS3(['team-models']);
    closers.push(() => s3.close());
    const s3Body = makeSafetensors(70_000, 11);
    await s3.put('team-models', 'loras/s3.safetensors', s3Body);
    const webBody = makeSafetensors(60_000, 12);
    const web = await startByteServer({ files: { '/m/up.safetensors': webBody } });
    closers.push(() => web.close());
    const civitai = await startCivitai();
    closers.push(() => civitai.close());
    const civ = makeSafetensors(40_000, 13);
    civitai.add({ id: 424_242, modelId: 4242, modelType: 'LORA', files: [{ name: 'civ-style.safetensors', content: civ }] });
    const env = { ...s3Env(s3, sb.dir), CIVITAI_ENDPOINT: civitai.endpoint };
    const { control } = await daemon(sb, policy(['s3://team-models/loras/*', `${web.url}/m/*`, 'https://civitai.com/api/download/models/*'], { require_sha256: true }), env);
    const r = await ensure(control, [`s3://team-models/loras/s3.safetensors=loras/s3.safetensors#sha256:${sha256(s3Body)}`, `${web.url}/m/up.safetensors=upscale_models/#sha256:${sha256(webBody).toUpperCase()}`, 'civitai://424242']);
    expect(r.code, r.stderr).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'loras/s3.safetensors'))).toBe(sha256(s3Body));
    expect(await fileSha256(path.join(sb.models, 'upscale_models/up.safetensors'))).toBe(sha256(webBody));
    expect(await fileSha256(path.join(sb.models, 'loras/civ-style.safetensors'))).toBe(sha256(civ));
    expect(lines(r.stdout).at(-1)).toMatch(/^3\/3 ready/);
  });

  it('--workflow: the models a ComfyUI template declares (a subgraph\'s properties.models[], Hub resolve URLs)', async () => {
    const sb = await sandbox(hub.endpoint);
    const paths = ['split_files/text_encoders/qwen_3_4b.safetensors', 'split_files/diffusion_models/z_image_turbo_bf16.safetensors', 'split_files/vae/ae.safetensors'];
    const files = paths.map((p, i) => ({ path: p, content: makeSafetensors(20_000 + i, 900 + i) }));
    hub.addRepo({ id: 'Comfy-Org/z_image_turbo', files });
    const { control } = await daemon(sb, policy(['hf://Comfy-Org/*', 'hf://test-org/*']));
    const r = await ensure(control, ['--workflow', path.join(FIXTURES, 'comfyui-template-text-to-image.json')]);
    expect(r.code, r.stderr).toBe(0);
    for (const [dest, f] of [['text_encoders/qwen_3_4b.safetensors', files[0]], ['diffusion_models/z_image_turbo_bf16.safetensors', files[1]], ['vae/ae.safetensors', files[2]]] as const) {
      expect(await fileSha256(path.join(sb.models, dest))).toBe(sha256(f?.content ?? Buffer.alloc(0)));
    }
    // An API-format prompt: its loader inputs that are URLs, named in the loader's folder.
    const l = addModel(hub, 30_000, { name: 'ensure-prompt-lora' });
    const prompt = path.join(sb.dir, 'prompt.json');
    await writeFile(prompt, JSON.stringify({ '1': { class_type: 'LoraLoader', inputs: { lora_name: l.uri, strength_model: 1 } }, '2': { class_type: 'KSampler', inputs: { seed: 1 } } }));
    const p = await ensure(control, ['--json', '--workflow', prompt]);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout)).toMatchObject({ ok: true, models: [{ dest: `loras/${l.path}`, state: 'ready' }] });
  });

  it('refused by the policy: exit 2, the code printed, nothing fetched', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 20_000);
    const { control } = await daemon(sb, policy(['hf://allowed-org/*']));
    hub.resetStats();
    const r = await ensure(control, [`${m.uri}=loras/x.safetensors`]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual([expect.stringMatching(/^modelsync: E_POLICY: .*on_demand\.allow/)]);
    expect(await exists(path.join(sb.models, 'loras/x.safetensors'))).toBe(false);
    expect(hub.stats.requests).toHaveLength(0);
    // What a manifest entry is refused for is refused the same way: exit 2, E_MANIFEST.
    const pickle = await ensure(control, ['--json', `hf://allowed-org/r/x.ckpt=checkpoints/x.ckpt`]);
    expect(pickle.code).toBe(2);
    expect(JSON.parse(pickle.stdout)).toMatchObject({ error: { code: 'E_MANIFEST', dest: 'checkpoints/x.ckpt' } });
  });

  it('a wrong sha256: exit 1 with the code, dest and message; nothing published', async () => {
    const sb = await sandbox(hub.endpoint);
    const body = makeSafetensors(50_000, 21);
    const web = await startByteServer({ files: { '/m/bad.safetensors': body } });
    closers.push(() => web.close());
    const { control } = await daemon(sb, policy([`${web.url}/m/*`]));
    const r = await ensure(control, [`${web.url}/m/bad.safetensors=loras/bad.safetensors#sha256:${'ab'.repeat(32)}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^modelsync: loras\/bad\.safetensors: E_HASH_MISMATCH: /m);
    expect(r.stdout).toMatch(/^failed +loras\/bad\.safetensors .*: E_HASH_MISMATCH: /m);
    expect(await exists(path.join(sb.models, 'loras/bad.safetensors'))).toBe(false);
  });

  it('two ensures of one entry at once fetch it once', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 400_000);
    hub.setFaults(m.sha256, { bytesPerSecond: 800_000 });
    const { control } = await daemon(sb, policy([`hf://${m.repo}@*`]));
    hub.resetStats();
    const [a, b] = await Promise.all([ensure(control, [`${m.uri}=loras/one.safetensors`]), ensure(control, [`${m.uri}=loras/one.safetensors`])]);
    expect([a.code, b.code], a.stderr + b.stderr).toEqual([0, 0]);
    expect(hub.stats.bytesServed.get(m.sha256)).toBe(m.content.length);
  });

  it('--timeout: exit 1 naming the job, which goes on in the daemon; SIGINT: the same, exit 130', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 800_000);
    hub.setFaults(m.sha256, { bytesPerSecond: 300_000 });
    const { d, control } = await daemon(sb, policy(['hf://test-org/*']));
    const r = await ensure(control, ['--timeout', '0.5', `${m.uri}=loras/slow.safetensors`]);
    expect(r.code).toBe(1);
    const id = /job ([A-Za-z0-9_-]+) goes on in the daemon/.exec(r.stderr)?.[1];
    expect(id, r.stderr).toBeDefined();
    await waitFor('the job to finish in the daemon', async () => JSON.parse((await d.get(`/models/jobs/${id ?? ''}`))?.body ?? '{}').done === true, 30_000);
    expect(await fileSha256(path.join(sb.models, 'loras/slow.safetensors'))).toBe(m.sha256);
    // --timeout 0 is readiness: in place now, exit 0 (not "stopped waiting").
    const now = await ensure(control, ['--timeout', '0', `${m.uri}=loras/slow.safetensors`]);
    expect(now.code, now.stderr).toBe(0);
    expect(lines(now.stdout).at(-1)).toMatch(/^1\/1 ready/);

    const n = addModel(hub, 800_000);
    hub.setFaults(n.sha256, { bytesPerSecond: 200_000 });
    const child = spawn(process.execPath, [BIN, 'ensure', '--control', control, `hf://${n.repo}/${n.path}=loras/int.safetensors`], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    await waitFor('the download to be under way', () => /^downloading/m.test(err)).catch((e: unknown) => {
      throw new Error(`${String(e)}; stderr: ${err}`);
    });
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(err).toMatch(/modelsync: interrupted: job [A-Za-z0-9_-]+ goes on in the daemon/);
    await waitFor('the interrupted job to finish in the daemon', async () => exists(path.join(sb.models, 'loras/int.safetensors')), 30_000);
  });

  it('a daemon that requires a token: one line without it; with it, sent and never printed', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 20_000);
    const token = 'CONTROLTOKENdoNotLeak0123456789';
    const { control } = await daemon(sb, policy([`hf://${m.repo}@*`]), { MODELSYNC_CONTROL_TOKEN: token });
    const without = await ensure(control, [`${m.uri}=loras/t.safetensors`]);
    expect(without.code).toBe(1);
    expect(lines(without.stderr)).toEqual([expect.stringMatching(/requires a token: set MODELSYNC_CONTROL_TOKEN/)]);
    const wrong = await ensure(control, [`${m.uri}=loras/t.safetensors`], { MODELSYNC_CONTROL_TOKEN: 'not-the-token-0123456789' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).not.toContain('not-the-token');
    const withIt = await ensure(control, [`${m.uri}=loras/t.safetensors`], { MODELSYNC_CONTROL_TOKEN: token });
    expect(withIt.code, withIt.stderr).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'loras/t.safetensors'))).toBe(m.sha256);
    for (const t of [without, wrong, withIt]) expect(t.stdout + t.stderr).not.toContain(token);
  });

  it.skipIf(!existsSync('/usr/bin/script'))('on a terminal: one bar redrawn in place, a line as an entry is ready', async () => {
    const sb = await sandbox(hub.endpoint);
    const m = addModel(hub, 600_000);
    hub.setFaults(m.sha256, { bytesPerSecond: 300_000 });
    const { control } = await daemon(sb, policy([`hf://${m.repo}@*`]));
    // script(1) gives the command a pseudo-terminal; what it wrote there comes back on stdout.
    const cmd = [process.execPath, BIN, 'ensure', '--control', control, `${m.uri}=loras/tty.safetensors`].map((a) => `'${a}'`).join(' ');
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn('/usr/bin/script', ['-qefc', cmd, '/dev/null'], { env: { PATH: process.env.PATH ?? '', TERM: 'dumb' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.once('close', (code) => resolve({ code, out }));
    });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/\r\[[#-]{24}\] +\d+% /);
    expect(r.out).toMatch(/\r\[#{24}\] 100% .* 1\/1 ready/);
    expect(r.out).toMatch(/^ready +loras\/tty\.safetensors/m);
    expect(r.out).not.toMatch(/^(queued|downloading) /m);
  });

  it('no daemon: exit 1, one line naming the control address', async () => {
    const port = await freePort();
    const r = await ensure(`127.0.0.1:${port}`, ['hf://org/repo/x.safetensors=loras/x.safetensors']);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual([expect.stringContaining(`127.0.0.1:${port}`)]);
  });
});

/** A fake daemon on 127.0.0.1: `handle` answers every request; `seen` lists them. */
async function fakeDaemon(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ control: string; seen: string[]; server: Server }> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method ?? ''} ${req.url ?? ''}`);
    req.resume();
    handle(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { control: `127.0.0.1:${(server.address() as AddressInfo).port}`, seen, server };
}

const JOB = 'fakejob1';
const model = (state: string): Record<string, unknown> => ({ dest: 'loras/x.safetensors', source: 'hf://o/r@main/x.safetensors', state, bytes: state === 'ready' ? 10 : 0, total: 10, speed: 0 });
const json = (res: ServerResponse, status: number, v: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(v));
};
const ENTRY = 'hf://o/r/x.safetensors=loras/x.safetensors';

describe('modelsync ensure against what is not a (well) daemon', () => {
  it('usage errors exit 2 before any request', async () => {
    const f = await fakeDaemon((_req, res) => json(res, 500, {}));
    for (const args of [[], ['hf://o/r/x.safetensors'], [`${ENTRY}#sha256:abc`], ['ftp://x/y.safetensors=loras/y.safetensors'], ['hf://o/r/x.safetensors=../x.safetensors'], ['hf://o/r/x.txt=loras/'], ['--workflow', '/nonexistent/wf.json'], ['--timeout', 'soon', ENTRY]]) {
      const r = await ensure(f.control, args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(lines(r.stderr), args.join(' ')).toHaveLength(1);
    }
    const notJson = path.join(REPO_ROOT, 'README.md');
    expect((await ensure(f.control, ['--workflow', notJson])).code).toBe(2);
    expect(f.seen).toEqual([]);
  });

  it('garbage, a 5xx, a huge answer, a garbled job: exit 1 with one line, no hang', async () => {
    const garbage = await fakeDaemon((_req, res) => res.end('hello, I am a web server'));
    const huge = await fakeDaemon((_req, res) => {
      res.writeHead(202, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', pump);
      };
      res.write('{"job":"x","models":[');
      pump();
    });
    const failing = await fakeDaemon((_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error\n');
    });
    const garbledJob = await fakeDaemon((req, res) => (req.method === 'POST' ? json(res, 202, { job: JOB, models: [model('queued')] }) : req.url?.startsWith('/events') ? res.destroy() : json(res, 200, { id: JOB, models: 'all of them' })));
    for (const f of [garbage, huge, failing, garbledJob]) {
      const r = await ensure(f.control, [ENTRY]);
      expect(r.code, r.stderr).toBe(1);
      const errors = lines(r.stderr).filter((l) => l.startsWith('modelsync:'));
      expect(errors, r.stderr).toHaveLength(1);
      expect(errors[0]).toContain(f.control);
    }
  });

  it('an event stream that is endless garbage, or that drops: the outcome comes from the job endpoint', async () => {
    let asked = 0;
    let streamClosed = false;
    const endless = await fakeDaemon((req, res) => {
      if (req.method === 'POST') return json(res, 202, { job: JOB, models: [model('queued')] });
      if (req.url?.startsWith('/events')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.once('close', () => (streamClosed = true));
        const junk = Buffer.alloc(64 * 1024, 0x61);
        const pump = (): void => {
          while (!res.destroyed && res.write(junk));
          if (!res.destroyed) res.once('drain', pump);
        };
        return pump();
      }
      asked++;
      // Running until the stream has been given up on, then done.
      return json(res, 200, { id: JOB, done: streamClosed, ok: streamClosed, models: [model(streamClosed ? 'ready' : 'downloading')] });
    });
    const r = await ensure(endless.control, [ENTRY]);
    expect(r.code, r.stderr).toBe(0);
    expect(streamClosed).toBe(true);
    // The outcome came from the job endpoint. Whether it was also asked while the stream was
    // still open depends on how fast the garbage fills the stream's bound: once, or more.
    expect(asked).toBeGreaterThanOrEqual(1);

    let polls = 0;
    const dropping = await fakeDaemon((req, res) => {
      if (req.method === 'POST') return json(res, 202, { job: JOB, models: [model('queued')] });
      if (req.url?.startsWith('/events')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        return res.end(': bye\n\n');
      }
      polls++;
      return json(res, 200, { id: JOB, done: polls >= 3, ok: polls >= 3, models: [model(polls >= 3 ? 'ready' : 'downloading')] });
    });
    const d = await ensure(dropping.control, ['--json', ENTRY]);
    expect(d.code, d.stderr).toBe(0);
    expect(JSON.parse(d.stdout)).toMatchObject({ id: JOB, ok: true });
    expect(lines(d.stderr).map((l) => l.split(/\s+/)[0])).toEqual(['queued', 'downloading', 'ready']);
  });

  it('a reason to look that comes while the job is being asked for is not lost (no wait for the next poll)', async () => {
    let stream: ServerResponse | undefined;
    let gets = 0;
    const f = await fakeDaemon((req, res) => {
      if (req.method === 'POST') return json(res, 202, { job: JOB, models: [model('queued')] });
      if (req.url?.startsWith('/events')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(': hello\n\n');
        stream = res;
        return;
      }
      gets++;
      if (gets > 1) return json(res, 200, { id: JOB, done: true, ok: true, models: [model('ready')] });
      // The first look is answered only after the stream is open and has said "ready": the
      // client has both reasons to look again while this answer (still downloading) is on its way.
      const answer = (): void => {
        if (stream === undefined) return void setTimeout(answer, 10);
        stream.write(`event: ready\ndata: ${JSON.stringify({ job: JOB, ...model('ready') })}\n\n`);
        setTimeout(() => json(res, 200, { id: JOB, done: false, ok: false, models: [model('downloading')] }), 100);
      };
      answer();
    });
    // The stream stays open: without the fix the next look is the open stream's 10 s safety poll.
    const r = await ensure(f.control, ['--timeout', '8', ENTRY]);
    expect(r.code, r.stderr).toBe(0);
    expect(gets).toBe(2);
  });

  it('the help page and the command list name ensure', async () => {
    const help = await runCli(['ensure', '--help'], { PATH: process.env.PATH ?? '' });
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: modelsync ensure ENTRY\.\.\./);
    for (const flag of ['--workflow FILE', '--timeout S', '--control HOST:PORT', '--json']) expect(help.stdout).toContain(flag);
    const main = await runCli(['--help'], { PATH: process.env.PATH ?? '' });
    expect(main.stdout).toMatch(/^ {2}ensure +have the running daemon fetch models on demand/m);
    expect(await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8')).toContain('modelsync ensure');
  });
});
