import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { run as dockerfilelint } from 'dockerfilelint';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { asArray, asRecord, asString, dig, isRecord, manifestProblems, repoPath } from './ship-helpers.js';

const DOCKERFILE = repoPath('docker', 'Dockerfile');

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

interface Instruction {
  /** 1-based line of the instruction's first line. */
  readonly line: number;
  readonly keyword: string;
  readonly args: string;
}

/** Instructions with continuation lines joined and comments dropped (as the builder does). */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && pending === '')) return;
    if (pending === '') start = i + 1;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      return;
    }
    const full = `${pending}${line}`.trim();
    pending = '';
    const m = /^(\S+)\s*(.*)$/s.exec(full);
    if (m) out.push({ line: start, keyword: (m[1] ?? '').toUpperCase(), args: m[2] ?? '' });
  });
  return out;
}

/** Instructions of each build stage, first stage first. */
function stages(all: readonly Instruction[]): Instruction[][] {
  const out: Instruction[][] = [];
  for (const ins of all) {
    if (ins.keyword === 'FROM') out.push([]);
    out[out.length - 1]?.push(ins);
  }
  return out;
}

function jsonArgs(ins: Instruction | undefined): string[] {
  if (ins === undefined) throw new Error('instruction missing');
  const parsed: unknown = JSON.parse(ins.args);
  return asArray(parsed, `${ins.keyword} on line ${ins.line} (exec form)`).map((a) => asString(a, ins.keyword));
}

function last(list: readonly Instruction[], keyword: string): Instruction | undefined {
  return list.filter((i) => i.keyword === keyword).at(-1);
}

/**
 * dockerfilelint findings accepted on purpose, by rule and instruction. Each must still occur
 * (a stale allowance fails too).
 */
const ACCEPTED_LINT: readonly { rule: string; keyword: string; why: string }[] = [
  {
    rule: 'invalid_format',
    keyword: 'HEALTHCHECK',
    why:
      'dockerfilelint 1.8 finds HEALTHCHECK options with /--\\w+/, which reads --start-period (a Docker option since 17.05) ' +
      'as an unknown "--start". The long start period is what keeps a cold multi-GB download from marking the container unhealthy.',
  },
];

describe('docker/Dockerfile', () => {
  const text = readFileSync(DOCKERFILE, 'utf8');
  const all = parseDockerfile(text);
  const byStage = stages(all);
  const final = byStage.at(-1) ?? [];

  it('passes dockerfilelint, apart from the findings accepted above', () => {
    const issues = dockerfilelint(path.dirname(DOCKERFILE), text);
    const keywordAt = (line: number): string => all.find((i) => i.line === line)?.keyword ?? `?line ${line}`;
    const found = issues.map((i) => ({ rule: i.rule, keyword: keywordAt(i.line), line: i.line, title: i.title }));
    const unexpected = found.filter((f) => !ACCEPTED_LINT.some((a) => a.rule === f.rule && a.keyword === f.keyword));
    expect(unexpected).toEqual([]);
    for (const a of ACCEPTED_LINT) {
      expect(found.some((f) => f.rule === a.rule && f.keyword === a.keyword), `stale allowance: ${a.rule} on ${a.keyword}`).toBe(true);
    }
  });

  it('builds modelsync in node:24-bookworm-slim and runs on a CUDA base', () => {
    expect(byStage.length).toBeGreaterThanOrEqual(2);
    expect(byStage[0]?.[0]?.args).toMatch(/^node:24-bookworm-slim\s+AS\s+build$/i);
    expect(final[0]?.args).toMatch(/^nvidia\/cuda:\S+/);
    const buildRuns = (byStage[0] ?? []).filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n');
    expect(buildRuns).toMatch(/npm ci/);
    expect(buildRuns).toMatch(/npm run build/);
    expect(buildRuns).toMatch(/npm prune --omit=dev/);
  });

  it('runs on the Node.js LTS that CI tests, the build stage on the same major, within engines', () => {
    const arg = all.find((i) => i.keyword === 'ARG' && i.args.startsWith('NODE_VERSION='))?.args ?? '';
    const version = /^NODE_VERSION=(\d+)\.(\d+)\.(\d+)$/.exec(arg);
    expect(version, arg).not.toBeNull();
    const major = Number(version?.[1]);
    // An LTS line (even major), 24 or newer: 20 is end of life.
    expect(major % 2).toBe(0);
    expect(major).toBeGreaterThanOrEqual(24);
    expect(byStage[0]?.[0]?.args).toMatch(new RegExp(`^node:${major}-`));
    // The version CI installs to run the whole suite (.ci/run) is the one the image ships.
    const ci = /^NODE24_VERSION=(\S+)$/m.exec(readFileSync(repoPath('.ci', 'run'), 'utf8'));
    expect(`NODE_VERSION=${ci?.[1] ?? ''}`).toBe(arg);
    const engines = (JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
    const open = /(?:^|\|\|)\s*>=\s*(\d+)/.exec(engines);
    expect(Number(open?.[1] ?? Infinity)).toBeLessThanOrEqual(major);
  });

  it('pins ComfyUI by ARG COMFYUI_VERSION and installs torch from a CUDA wheel index', () => {
    const args = all.filter((i) => i.keyword === 'ARG').map((i) => i.args);
    expect(args.some((a) => /^COMFYUI_VERSION=v\d+\.\d+\.\d+$/.test(a))).toBe(true);
    expect(args.some((a) => /^TORCH_INDEX_URL=https:\/\/download\.pytorch\.org\/whl\/cu\d+$/.test(a))).toBe(true);
    const runs = all.filter((i) => i.keyword === 'RUN').map((i) => i.args);
    expect(runs.some((r) => r.includes('git clone') && r.includes('--branch "${COMFYUI_VERSION}"'))).toBe(true);
    expect(runs.some((r) => r.includes('--index-url "${TORCH_INDEX_URL}"'))).toBe(true);
    expect(runs.some((r) => r.includes('pip install -r /opt/ComfyUI/requirements.txt'))).toBe(true);
  });

  it('runs `modelsync run` under tini with ComfyUI as the default child', () => {
    expect(jsonArgs(last(final, 'ENTRYPOINT'))).toEqual(['tini', '--', 'modelsync', 'run']);
    expect(jsonArgs(last(final, 'CMD'))).toEqual(['python3', 'main.py', '--listen', '0.0.0.0', '--port', '8188', '--disable-auto-launch']);
    expect(last(final, 'WORKDIR')?.args).toBe('/opt/ComfyUI');
    expect(last(final, 'EXPOSE')?.args.split(/\s+/)).toEqual(['8188']);
    expect(final.filter((i) => i.keyword === 'RUN').some((r) => /apt-get install[^&]*\btini\b/.test(r.args))).toBe(true);
  });

  it('checks readiness on the control API', () => {
    const hc = last(final, 'HEALTHCHECK')?.args ?? '';
    expect(hc).toContain('http://127.0.0.1:8189/readyz');
    expect(hc).toMatch(/--start-period=\d+[smh]/);
  });

  it('runs as a numeric non-root user', () => {
    const user = last(final, 'USER')?.args ?? '';
    expect(user).toMatch(/^\d+(:\d+)?$/);
    const [uid] = user.split(':');
    expect(Number(uid)).toBeGreaterThan(0);
    // Nothing after USER switches back.
    const after = final.slice(final.findIndex((i) => i.keyword === 'USER'));
    expect(after.filter((i) => i.keyword === 'USER')).toHaveLength(1);
  });

  it('bakes no models in', () => {
    const modelFile = /\.(safetensors|ckpt|pt|pth|bin|gguf|sft|onnx)\b/i;
    for (const ins of all.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')) {
      const sources = ins.args.split(/\s+/).filter((w) => !w.startsWith('--')).slice(0, -1);
      for (const s of sources) {
        expect(s, `line ${ins.line}`).not.toMatch(/(^|\/)models?(\/|$)/);
        expect(s, `line ${ins.line}`).not.toMatch(modelFile);
        expect(s, `line ${ins.line}`).not.toMatch(/^manifests?(\/|$)/);
      }
    }
    for (const ins of all.filter((i) => i.keyword === 'RUN')) {
      expect(ins.args, `line ${ins.line}`).not.toMatch(modelFile);
      expect(ins.args, `line ${ins.line}`).not.toMatch(/huggingface-cli|hf download|modelsync (sync|run)/);
    }
    expect(all.some((i) => i.keyword === 'ADD')).toBe(false);
    expect(last(final, 'VOLUME')?.args).toBe('["/models"]');
  });

  it('keeps the state dir off the models volume and the manifest out of the image', () => {
    const env = final.filter((i) => i.keyword === 'ENV').map((i) => i.args).join(' ');
    expect(env).toMatch(/MODELSYNC_MODELS_DIR=\/models\b/);
    expect(env).toMatch(/MODELSYNC_STATE_DIR=\/var\/lib\/modelsync\b/);
    expect(env).toMatch(/MODELSYNC_MANIFEST=\/etc\/modelsync\/manifest\.yaml\b/);
  });

  it('ships the extra_model_paths.yaml that maps ComfyUI onto MODELSYNC_MODELS_DIR', () => {
    expect(final.some((i) => i.keyword === 'COPY' && i.args === 'docker/extra_model_paths.yaml /opt/ComfyUI/extra_model_paths.yaml')).toBe(true);
    const cfg = asRecord(dig(parse(readFileSync(repoPath('docker', 'extra_model_paths.yaml'), 'utf8')), 'modelsync'), 'extra_model_paths.yaml');
    expect(cfg.base_path).toBe('${MODELSYNC_MODELS_DIR}');
    expect(cfg.is_default).toBe(true);
    for (const folder of ['checkpoints', 'loras', 'vae', 'text_encoders', 'diffusion_models', 'controlnet', 'upscale_models', 'audio_encoders', 'clip_vision', 'embeddings']) {
      expect(typeof cfg[folder], folder).toBe('string');
    }
  });

  it('has a build-context filter next to it that BuildKit actually reads', () => {
    const ignore = readFileSync(repoPath('docker', 'Dockerfile.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    expect(ignore).toContain('!docker/extra_model_paths.yaml');
    // Everything the Dockerfile copies from the context is let through.
    for (const ins of all.filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from'))) {
      for (const src of ins.args.split(/\s+/).slice(0, -1)) {
        expect(ignore.some((l) => l === `!${src}` || l === `!${src}/`), `${src} is filtered out of the build context`).toBe(true);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// docker/compose.yaml
// ---------------------------------------------------------------------------------------------

describe('docker/compose.yaml', () => {
  const compose = asRecord(parse(readFileSync(repoPath('docker', 'compose.yaml'), 'utf8')), 'compose.yaml');
  const services = asRecord(compose.services, 'services');
  const [name, rawSvc] = Object.entries(services).find(([, s]) => dig(s, 'build', 'dockerfile') === 'docker/Dockerfile') ?? [];
  const svc = asRecord(rawSvc, `service built from docker/Dockerfile (${String(name)})`);

  it('publishes ComfyUI and the control API on loopback only', () => {
    const ports = asArray(svc.ports, 'ports').map((p) => asString(p, 'port'));
    expect(ports).toEqual(expect.arrayContaining(['127.0.0.1:8188:8188', '127.0.0.1:8189:8189']));
    for (const p of ports) expect(p).toMatch(/^127\.0\.0\.1:/);
    // ...which needs the control API on the container's interface, not its loopback.
    const cmd = asArray(svc.command, 'command').map((c) => String(c));
    expect(cmd.slice(0, cmd.indexOf('--'))).toEqual(['--control', '0.0.0.0:8189']);
    expect(cmd.slice(cmd.indexOf('--') + 1, cmd.indexOf('--') + 3)).toEqual(['python3', 'main.py']);
  });

  it('reserves NVIDIA GPUs', () => {
    const devices = asArray(dig(svc, 'deploy', 'resources', 'reservations', 'devices'), 'devices');
    expect(devices.some((d) => isRecord(d) && d.driver === 'nvidia' && Array.isArray(d.capabilities) && d.capabilities.includes('gpu'))).toBe(true);
  });

  it('keeps models on a named volume and mounts the manifest read-only', () => {
    const volumes = asArray(svc.volumes, 'volumes').map((v) => asString(v, 'volume'));
    expect(volumes).toContain('models:/models');
    expect(Object.keys(asRecord(compose.volumes, 'top-level volumes'))).toContain('models');
    const manifest = volumes.find((v) => v.endsWith(':/etc/modelsync/manifest.yaml:ro'));
    expect(manifest).toBeDefined();
    // The default manifest it points at exists (paths are relative to the compose file).
    const dflt = /^\$\{MODELSYNC_MANIFEST_FILE:-([^}]+)\}:/.exec(manifest ?? '')?.[1];
    expect(dflt).toBeDefined();
    expect(existsSync(path.resolve(repoPath('docker'), dflt ?? ''))).toBe(true);
  });

  it('passes HF_TOKEN through from the environment or .env, without a value in the file', () => {
    const env = asArray(svc.environment, 'environment').map((e) => asString(e, 'environment entry'));
    expect(env).toContain('HF_TOKEN');
    expect(env.some((e) => e.startsWith('HF_TOKEN='))).toBe(false);
  });

  it('requires MODELSYNC_CONTROL_TOKEN, which the control API needs beyond loopback', () => {
    const env = asArray(svc.environment, 'environment').map((e) => asString(e, 'environment entry'));
    // `${VAR:?message}`: compose refuses to start without it instead of starting a daemon that exits 2.
    expect(env).toContainEqual(expect.stringMatching(/^MODELSYNC_CONTROL_TOKEN=\$\{MODELSYNC_CONTROL_TOKEN:\?[^}]+\}$/));
  });

  it('health-checks /readyz with a start period long enough for a cold download', () => {
    const test = asArray(dig(svc, 'healthcheck', 'test'), 'healthcheck.test').map((t) => String(t));
    expect(test[0]).toBe('CMD');
    expect(test.join(' ')).toContain('http://127.0.0.1:8189/readyz');
    expect(dig(svc, 'healthcheck', 'start_period')).toMatch(/^\d+[hm]$/);
  });
});

// ---------------------------------------------------------------------------------------------
// docker/kubernetes.yaml
// ---------------------------------------------------------------------------------------------

type Obj = Record<string, unknown>;

function probePort(container: Obj, probe: unknown): number | undefined {
  const port = dig(probe, 'httpGet', 'port');
  if (typeof port === 'number') return port;
  const named = asArray(container.ports, 'ports').find((p) => dig(p, 'name') === port);
  const n = dig(named, 'containerPort');
  return typeof n === 'number' ? n : undefined;
}

function onlyContainer(workload: Obj): Obj {
  const containers = asArray(dig(workload, 'spec', 'template', 'spec', 'containers'), 'containers');
  expect(containers).toHaveLength(1);
  return asRecord(containers[0], 'container');
}

function volumeNamed(workload: Obj, volume: string): Obj {
  const volumes = asArray(dig(workload, 'spec', 'template', 'spec', 'volumes'), 'volumes');
  return asRecord(
    volumes.find((v) => dig(v, 'name') === volume),
    `volume ${volume}`,
  );
}

describe('docker/kubernetes.yaml', () => {
  const docs = parseAllDocuments(readFileSync(repoPath('docker', 'kubernetes.yaml'), 'utf8'));
  const objects = docs.map((d) => asRecord(d.toJS(), 'document'));
  const ofKind = (kind: string): Obj[] => objects.filter((o) => o.kind === kind);
  const one = (kind: string): Obj => {
    const list = ofKind(kind);
    expect(list, kind).toHaveLength(1);
    return list[0] ?? {};
  };

  it('is valid multi-document YAML of Kubernetes objects', () => {
    for (const d of docs) {
      expect(d.errors.map((e) => e.message)).toEqual([]);
      expect(d.warnings.map((e) => e.message)).toEqual([]);
    }
    for (const o of objects) {
      expect(typeof o.apiVersion).toBe('string');
      expect(typeof dig(o, 'metadata', 'name')).toBe('string');
    }
    expect(new Set(objects.map((o) => o.kind))).toEqual(new Set(['Secret', 'ConfigMap', 'PersistentVolumeClaim', 'Service', 'Deployment', 'DaemonSet']));
  });

  it('has a Secret for HF_TOKEN and a ConfigMap holding a valid manifest', () => {
    const secret = one('Secret');
    expect(Object.keys(asRecord(secret.stringData ?? secret.data, 'secret data'))).toContain('HF_TOKEN');
    const text = asString(dig(one('ConfigMap'), 'data', 'manifest.yaml'), 'ConfigMap manifest.yaml');
    const manifest: unknown = parse(text);
    expect(manifestProblems(manifest)).toEqual([]);
    // It claims to be manifests/sdxl.yaml: keep the two in step.
    const sdxl: unknown = parse(readFileSync(repoPath('manifests', 'sdxl.yaml'), 'utf8'));
    expect(dig(manifest, 'models')).toEqual(dig(sdxl, 'models'));
  });

  it('claims a ReadWriteMany volume', () => {
    expect(dig(one('PersistentVolumeClaim'), 'spec', 'accessModes')).toContain('ReadWriteMany');
  });

  it('runs ComfyUI under modelsync with generous startup, readiness and liveness probes', () => {
    const deploy = one('Deployment');
    const c = onlyContainer(deploy);
    const args = asArray(c.args, 'args').map((a) => String(a));
    const sep = args.indexOf('--');
    expect(args.slice(0, sep)).toEqual(['--control', '0.0.0.0:8189']);
    expect(args.slice(sep + 1, sep + 3)).toEqual(['python3', 'main.py']);

    const startup = asRecord(c.startupProbe, 'startupProbe');
    expect(dig(startup, 'httpGet', 'path')).toBe('/readyz');
    expect(Number(startup.periodSeconds) * Number(startup.failureThreshold)).toBeGreaterThanOrEqual(3600);
    expect(dig(c, 'readinessProbe', 'httpGet', 'path')).toBe('/readyz');
    expect(dig(c, 'livenessProbe', 'httpGet', 'path')).toBe('/healthz');
    for (const p of [c.startupProbe, c.readinessProbe, c.livenessProbe]) expect(probePort(c, p)).toBe(8189);

    expect(dig(c, 'resources', 'limits', 'nvidia.com/gpu')).toBe(1);
    expect(dig(deploy, 'spec', 'template', 'spec', 'securityContext', 'runAsNonRoot')).toBe(true);
  });

  it('wires the Secret, ConfigMap and PVC into the Deployment', () => {
    const deploy = one('Deployment');
    const c = onlyContainer(deploy);
    const env = asArray(c.env, 'env');
    const token = env.find((e) => dig(e, 'name') === 'HF_TOKEN');
    expect(dig(token, 'valueFrom', 'secretKeyRef', 'name')).toBe(dig(one('Secret'), 'metadata', 'name'));
    expect(dig(volumeNamed(deploy, 'models'), 'persistentVolumeClaim', 'claimName')).toBe(dig(one('PersistentVolumeClaim'), 'metadata', 'name'));
    expect(dig(volumeNamed(deploy, 'manifest'), 'configMap', 'name')).toBe(dig(one('ConfigMap'), 'metadata', 'name'));
    // The state DB must be on local disk, never the shared volume.
    expect(volumeNamed(deploy, 'state').persistentVolumeClaim).toBeUndefined();
    // subPath mounts never see ConfigMap updates, which would defeat the manifest watch.
    for (const m of asArray(c.volumeMounts, 'volumeMounts')) expect(dig(m, 'subPath')).toBeUndefined();
  });

  it('gives every control API bound beyond loopback its token from a Secret (required, not optional)', () => {
    for (const kind of ['Deployment', 'DaemonSet']) {
      const c = onlyContainer(one(kind));
      expect(asArray(c.args, 'args').map((a) => String(a))).toContain('0.0.0.0:8189');
      const token = asArray(c.env, 'env').find((e) => dig(e, 'name') === 'MODELSYNC_CONTROL_TOKEN');
      expect(dig(token, 'valueFrom', 'secretKeyRef', 'key'), kind).toBe('MODELSYNC_CONTROL_TOKEN');
      expect(dig(token, 'valueFrom', 'secretKeyRef', 'optional'), kind).toBeUndefined();
      expect(dig(token, 'value'), kind).toBeUndefined();
    }
  });

  it('has a DaemonSet that pre-warms each node with `modelsync run` and no child', () => {
    const ds = one('DaemonSet');
    const c = onlyContainer(ds);
    const args = asArray(c.args, 'args').map((a) => String(a));
    expect(args).not.toContain('--');
    expect(args).toEqual(['--control', '0.0.0.0:8189']);
    expect(c.command).toBeUndefined(); // keeps the image's `tini -- modelsync run`
    expect(dig(c, 'readinessProbe', 'httpGet', 'path')).toBe('/readyz');
    expect(dig(c, 'livenessProbe', 'httpGet', 'path')).toBe('/healthz');
    expect(probePort(c, c.readinessProbe)).toBe(8189);
    expect(dig(volumeNamed(ds, 'models'), 'hostPath', 'path')).toMatch(/^\//);
    expect(dig(volumeNamed(ds, 'state'), 'persistentVolumeClaim')).toBeUndefined();
  });
});
