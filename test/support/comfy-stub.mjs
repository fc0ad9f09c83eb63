#!/usr/bin/env node
// A ComfyUI stand-in for supervision tests: same flags and endpoints modelsync relies on, plus
// --stub-* flags that make it slow, crashy, hung, stubborn or leaky (see usage() below).
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { totalmem, freemem } from 'node:os';
import { URL } from 'node:url';
import { objectInfo, validatePrompt } from './comfy-stub-models.mjs';
import { PromptQueue } from './comfy-stub-queue.mjs';
import { attachWebsocket } from './comfy-stub-ws.mjs';

function usage() {
  return `usage: comfy-stub.mjs [--listen [HOST]] [--port N] [ComfyUI flags, ignored]
  --stub-start-delay-ms N   wait N ms before listening
  --stub-crash-after-ms N   exit N ms after start with --stub-exit-code (default 1)
  --stub-hang               accept connections but never answer
  --stub-ignore-sigterm     stay alive on SIGTERM (SIGKILL still works)
  --stub-record FILE        write {argv, env, pid, ppid, pgid, port, grandchildPid} as JSON
  --stub-models-dir DIR     list model files under DIR/<folder> in /object_info; POST /prompt
                            refuses a loader input naming a file that is not there
  --stub-prompt-ms N        how long a prompt runs (default 50; extra_data.stub_hold: until
                            POST /stub/release {prompt_id})
  --stub-spawn-grandchild   spawn a long-lived \`sleep 1000\` in the same process group
  --stub-stdout JSON        write this text (a JSON string literal) on stdout at start
  --stub-stderr JSON        write this text (a JSON string literal) on stderr at start
  --stub-last-words JSON    write this text on stdout just before exiting (on SIGTERM instead of "Stopped server")`;
}

const VALUE_FLAGS = new Set(['--port', '--stub-prompt-ms', '--stub-start-delay-ms', '--stub-crash-after-ms', '--stub-exit-code', '--stub-record', '--stub-models-dir', '--stub-stdout', '--stub-stderr', '--stub-last-words']);

function parseArgs(argv) {
  const opts = { listen: '127.0.0.1', port: 8188, flags: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      console.log(usage());
      process.exit(0);
    } else if (arg === '--listen') {
      // ComfyUI: a bare --listen means all interfaces.
      const next = argv[i + 1];
      opts.listen = next !== undefined && !next.startsWith('--') ? (i++, next.split(',')[0]) : '0.0.0.0';
    } else if (VALUE_FLAGS.has(arg)) {
      opts[arg.replace(/^--(stub-)?/, '')] = argv[++i];
    } else if (arg.startsWith('--stub-')) {
      opts.flags.add(arg.slice('--stub-'.length));
    }
    // Anything else is a ComfyUI flag this stub does not model (e.g. --disable-auto-launch).
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const port = Number(opts.port);
const exitCode = opts['exit-code'] === undefined ? 1 : Number(opts['exit-code']);
const recordPath = opts.record;
const record = { argv: process.argv, env: process.env, pid: process.pid, ppid: process.ppid, pgid: processGroup(), port: null, grandchildPid: null };

function processGroup() {
  try {
    // /proc/self/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces or parens.
    const stat = readFileSync('/proc/self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return null;
  }
}

function writeRecord() {
  if (recordPath === undefined) return;
  // Atomic, so a test polling the file never reads half of it.
  writeFileSync(`${recordPath}.tmp-${process.pid}`, JSON.stringify(record, null, 2));
  renameSync(`${recordPath}.tmp-${process.pid}`, recordPath);
}

if (opts.flags.has('spawn-grandchild')) {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  record.grandchildPid = child.pid ?? null;
}
writeRecord();

process.on('SIGTERM', () => {
  if (opts.flags.has('ignore-sigterm')) {
    process.stderr.write('comfy-stub: ignoring SIGTERM\n');
    return;
  }
  process.stdout.write(opts['last-words'] === undefined ? '\nStopped server\n' : JSON.parse(opts['last-words']));
  process.exit(0);
});
process.on('SIGINT', () => {
  process.stdout.write('\nStopped server\n');
  process.exit(0);
});

process.stderr.write(`Total VRAM 0 MB, total RAM ${Math.round(totalmem() / 2 ** 20)} MB\npid ${process.pid}\n`);
if (opts.stdout !== undefined) process.stdout.write(JSON.parse(opts.stdout));
if (opts.stderr !== undefined) process.stderr.write(JSON.parse(opts.stderr));

if (opts['crash-after-ms'] !== undefined) {
  setTimeout(() => {
    process.stderr.write('Traceback (most recent call last):\n  File "main.py", line 1, in <module>\nRuntimeError: comfy-stub crashed on purpose\n');
    if (opts['last-words'] !== undefined) process.stdout.write(JSON.parse(opts['last-words']));
    process.exit(exitCode);
  }, Number(opts['crash-after-ms']));
}

let promptNumber = 0;
const CYCLE = Buffer.from(Array.from({ length: 65536 + 251 }, (_, i) => i % 251));
/** The last requests, for tests to see what reached "ComfyUI": method, path, headers, body. */
const requests = [];
const MAX_RECORDED = 200;

function recordRequest(req, body) {
  requests.push({ method: req.method, url: req.url, headers: req.headers, body });
  if (requests.length > MAX_RECORDED) requests.shift();
}

function send(res, status, body) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/html' : 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks);
}

function parseJson(buf) {
  try {
    return JSON.parse(buf.toString('utf8') || 'null');
  } catch {
    return undefined;
  }
}

let ws;
const queue = new PromptQueue((type, data, sid) => ws?.send(type, data, sid), Number(opts['prompt-ms'] ?? 50));

async function postPrompt(req, res) {
  const raw = await readBody(req);
  recordRequest(req, raw.toString('utf8'));
  const body = parseJson(raw);
  if (!body || typeof body !== 'object' || typeof body.prompt !== 'object' || body.prompt === null) {
    return send(res, 400, { error: { type: 'no_prompt', message: 'No prompt provided', details: 'No prompt provided', extra_info: {} }, node_errors: {} });
  }
  const promptId = body.prompt_id === undefined ? randomUUID() : String(body.prompt_id);
  const v = validatePrompt(body.prompt, opts['models-dir']);
  if (!v.ok) return send(res, 400, { error: v.error, node_errors: v.nodeErrors });
  const number = typeof body.number === 'number' ? body.number : body.front ? -promptNumber++ : promptNumber++;
  const extra = typeof body.extra_data === 'object' && body.extra_data !== null ? body.extra_data : {};
  if ('client_id' in body) extra.client_id = body.client_id;
  queue.put({ number, prompt_id: promptId, prompt: body.prompt, extra_data: extra });
  return send(res, 200, { prompt_id: promptId, number, node_errors: {} });
}

async function handle(req, res) {
  // ComfyUI serves every route both as is and under /api.
  const path = (req.url ?? '/').split('?')[0].replace(/^\/api(?=\/)/, '');
  const query = new URL(req.url ?? '/', 'http://stub').searchParams;
  if (req.method === 'GET' && path === '/system_stats') {
    return send(res, 200, {
      system: {
        os: 'posix',
        ram_total: totalmem(),
        ram_free: freemem(),
        comfyui_version: '0.3.99-stub',
        python_version: '3.12.3 (main, Jan 1 2025, 00:00:00) [GCC 13.2.0]',
        pytorch_version: '2.6.0+cpu',
        embedded_python: false,
        argv: process.argv.slice(1),
      },
      devices: [],
    });
  }
  if (req.method === 'GET' && path === '/object_info') return send(res, 200, objectInfo(opts['models-dir']));
  if (req.method === 'GET' && path.startsWith('/object_info/')) {
    const node = decodeURIComponent(path.slice('/object_info/'.length));
    const info = objectInfo(opts['models-dir']);
    return send(res, 200, node in info ? { [node]: info[node] } : {});
  }
  if (path === '/prompt' && req.method === 'POST') return postPrompt(req, res);
  if (path === '/prompt' && req.method === 'GET') return send(res, 200, { exec_info: { queue_remaining: queue.remaining() } });
  if (path === '/queue' && req.method === 'GET') return send(res, 200, queue.current());
  if (path === '/queue' && req.method === 'POST') {
    const body = parseJson(await readBody(req)) ?? {};
    if (body.clear) queue.clear();
    if (Array.isArray(body.delete)) queue.remove(body.delete);
    return send(res, 200, '');
  }
  if (path === '/interrupt' && req.method === 'POST') {
    await readBody(req);
    queue.interrupt();
    return send(res, 200, '');
  }
  if (path === '/history' && req.method === 'GET') return send(res, 200, Object.fromEntries(queue.history));
  if (path.startsWith('/history/') && req.method === 'GET') {
    const id = decodeURIComponent(path.slice('/history/'.length));
    return send(res, 200, queue.history.has(id) ? { [id]: queue.history.get(id) } : {});
  }
  if (path === '/upload/image' && req.method === 'POST') {
    // Streamed in, hashed, thrown away: enough to tell that every byte arrived unchanged.
    const hash = createHash('sha256');
    let size = 0;
    for await (const c of req) {
      hash.update(c);
      size += c.length;
    }
    recordRequest(req, undefined);
    return send(res, 200, { name: 'upload.png', subfolder: '', type: 'input', size, sha256: hash.digest('hex') });
  }
  if (path === '/view' && req.method === 'GET') {
    // N deterministic bytes (byte i is i mod 251), written in 64 KiB pieces with backpressure.
    const n = Number(query.get('stub_size') ?? '0');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
    let sent = 0;
    const write = () => {
      while (sent < n) {
        const len = Math.min(65536, n - sent);
        const piece = CYCLE.subarray(sent % 251, (sent % 251) + len);
        sent += len;
        if (!res.write(piece)) return void res.once('drain', write);
      }
      res.end();
    };
    return write();
  }
  if (path === '/stub/requests' && req.method === 'GET') return send(res, 200, requests);
  if (path === '/stub/ws-clients' && req.method === 'GET') return send(res, 200, ws?.clients ?? []);
  if (path === '/stub/broadcast' && req.method === 'POST') {
    // A message of the test's choosing to every websocket client, as if ComfyUI had sent it.
    const body = parseJson(await readBody(req)) ?? {};
    ws?.send(String(body.type), body.data, undefined);
    return send(res, 200, '');
  }
  if (path === '/stub/release' && req.method === 'POST') {
    const body = parseJson(await readBody(req)) ?? {};
    queue.release(String(body.prompt_id));
    return send(res, 200, '');
  }
  recordRequest(req, undefined);
  if (req.method === 'GET' && path === '/') return send(res, 200, '<!doctype html><title>ComfyUI</title>');
  return send(res, 404, '404: Not Found');
}

function start() {
  const hang = opts.flags.has('hang');
  const server = createServer((req, res) => {
    // Hung: the request is read and then left unanswered, so only a client timeout ends it.
    if (!hang) handle(req, res).catch(() => res.destroy());
  });
  ws = attachWebsocket(server, { queueInfo: () => ({ exec_info: { queue_remaining: queue.remaining() } }), onHandshake: (req) => recordRequest(req, undefined) });
  server.listen(port, opts.listen, () => {
    const actual = server.address().port;
    record.port = actual;
    writeRecord();
    const host = opts.listen === '0.0.0.0' ? '127.0.0.1' : opts.listen;
    process.stdout.write(hang ? 'Starting server\n\n' : `Starting server\n\nTo see the GUI go to: http://${host}:${actual}\n`);
  });
  server.on('error', (err) => {
    process.stderr.write(`comfy-stub: ${err.message}\n`);
    process.exit(1);
  });
}

const delay = Number(opts['start-delay-ms'] ?? 0);
setTimeout(start, Number.isFinite(delay) ? delay : 0);
