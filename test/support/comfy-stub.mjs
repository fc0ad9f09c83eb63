#!/usr/bin/env node
// A ComfyUI stand-in for supervision tests: same flags and endpoints modelsync relies on, plus
// --stub-* flags that make it slow, crashy, hung, stubborn or leaky (see usage() below).
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { totalmem, freemem } from 'node:os';
import { join } from 'node:path';

function usage() {
  return `usage: comfy-stub.mjs [--listen [HOST]] [--port N] [ComfyUI flags, ignored]
  --stub-start-delay-ms N   wait N ms before listening
  --stub-crash-after-ms N   exit N ms after start with --stub-exit-code (default 1)
  --stub-hang               accept connections but never answer
  --stub-ignore-sigterm     stay alive on SIGTERM (SIGKILL still works)
  --stub-record FILE        write {argv, env, pid, ppid, pgid, port, grandchildPid} as JSON
  --stub-models-dir DIR     list model files under DIR/<folder> in /object_info
  --stub-spawn-grandchild   spawn a long-lived \`sleep 1000\` in the same process group
  --stub-stdout JSON        write this text (a JSON string literal) on stdout at start
  --stub-stderr JSON        write this text (a JSON string literal) on stderr at start
  --stub-last-words JSON    write this text on stdout just before exiting (on SIGTERM instead of "Stopped server")`;
}

const VALUE_FLAGS = new Set(['--port', '--stub-start-delay-ms', '--stub-crash-after-ms', '--stub-exit-code', '--stub-record', '--stub-models-dir', '--stub-stdout', '--stub-stderr', '--stub-last-words']);

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

// folder under the models dir -> [loader node, input name], as in ComfyUI's folder_paths.
const LOADERS = {
  checkpoints: ['CheckpointLoaderSimple', 'ckpt_name'],
  loras: ['LoraLoader', 'lora_name'],
  vae: ['VAELoader', 'vae_name'],
  controlnet: ['ControlNetLoader', 'control_net_name'],
  upscale_models: ['UpscaleModelLoader', 'model_name'],
  clip: ['CLIPLoader', 'clip_name'],
  clip_vision: ['CLIPVisionLoader', 'clip_name'],
  diffusion_models: ['UNETLoader', 'unet_name'],
  text_encoders: ['DualCLIPLoader', 'clip_name1'],
};
const MODEL_EXTENSIONS = /\.(ckpt|pt|pt2|bin|pth|safetensors|pkl|sft|gguf)$/i;

/** Like os.walk(followlinks=True) + ComfyUI's extension filter: dangling links are listed too. */
function listModels(dir, prefix = '') {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out = [];
  for (const e of entries) {
    const full = join(dir, e.name);
    let isDir = e.isDirectory();
    if (e.isSymbolicLink()) {
      try {
        isDir = statSync(full).isDirectory();
      } catch {
        isDir = false;
      }
    }
    if (isDir) out.push(...listModels(full, `${prefix}${e.name}/`));
    else if (MODEL_EXTENSIONS.test(e.name)) out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

function objectInfo() {
  const info = {};
  for (const [folder, [node, input]] of Object.entries(LOADERS)) {
    const files = opts['models-dir'] === undefined ? [] : listModels(join(opts['models-dir'], folder));
    info[node] = {
      input: { required: { [input]: [files] } },
      output: ['MODEL'],
      name: node,
      display_name: node,
      category: 'loaders',
      output_node: false,
    };
  }
  return info;
}

let promptNumber = 0;

function send(res, status, body) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/html' : 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
  } catch {
    return undefined;
  }
}

async function handle(req, res) {
  const path = (req.url ?? '/').split('?')[0];
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
  if (req.method === 'GET' && path === '/object_info') return send(res, 200, objectInfo());
  if (req.method === 'GET' && path.startsWith('/object_info/')) {
    const node = decodeURIComponent(path.slice('/object_info/'.length));
    const info = objectInfo();
    return send(res, 200, node in info ? { [node]: info[node] } : {});
  }
  if (path === '/queue' && req.method === 'GET') return send(res, 200, { queue_running: [], queue_pending: [] });
  if (path === '/queue' && req.method === 'POST') return send(res, 200, {});
  if (path === '/prompt' && req.method === 'POST') {
    const body = await readJson(req);
    if (!body || typeof body !== 'object' || typeof body.prompt !== 'object' || body.prompt === null) {
      return send(res, 400, { error: { type: 'no_prompt', message: 'No prompt provided', details: '', extra_info: {} }, node_errors: {} });
    }
    return send(res, 200, { prompt_id: randomUUID(), number: promptNumber++, node_errors: {} });
  }
  if (path === '/prompt' && req.method === 'GET') return send(res, 200, { exec_info: { queue_remaining: 0 } });
  if (req.method === 'GET' && path === '/') return send(res, 200, '<!doctype html><title>ComfyUI</title>');
  return send(res, 404, '404: Not Found');
}

function start() {
  const hang = opts.flags.has('hang');
  const server = createServer((req, res) => {
    // Hung: the request is read and then left unanswered, so only a client timeout ends it.
    if (!hang) handle(req, res).catch(() => res.destroy());
  });
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
