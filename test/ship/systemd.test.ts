import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoPath } from './ship-helpers.js';

const UNIT_DIR = repoPath('systemd');
const UNITS = readdirSync(UNIT_DIR)
  .filter((f) => /\.(service|timer|socket|path)$/.test(f))
  .sort();
const DROP_IN_DIR = path.join(UNIT_DIR, 'modelsync.service.d');

// The only complaint tolerated: the units point at the installed binary, which a build or CI
// machine does not have. Anything else systemd-analyze says fails the test.
const MISSING_BINARY = /^[\w@.-]+\.(service|timer): Command \/usr\/local\/bin\/modelsync is not executable: No such file or directory$/;
// What systemd < 254 says about the back-off drop-in (that is why it is a drop-in).
const OLD_SYSTEMD_BACKOFF = /10-restart-backoff\.conf:\d+: Unknown key '(RestartSteps|RestartMaxDelaySec)' in section \[Service\], ignoring\.$/;
const NOT_INSTALLED = 'systemd-analyze is not installed (Debian/Ubuntu package: systemd)';

function probeSystemdAnalyze(): { version: number } | undefined {
  const r = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
  // Installed but unusable is a failure, not a skip.
  if (r.error !== undefined || r.status !== 0) throw new Error(`systemd-analyze --version failed: ${String(r.error ?? r.stderr)}`);
  const m = /^systemd (\d+)/m.exec(r.stdout);
  if (!m) throw new Error(`cannot read the systemd version from: ${r.stdout}`);
  return { version: Number(m[1]) };
}

const analyze = probeSystemdAnalyze();
const tempDirs: string[] = [];

afterAll(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'modelsync-units-'));
  tempDirs.push(d);
  return d;
}

/** Runs `systemd-analyze verify` and returns its complaints, one per line. */
function verify(dir: string, units: readonly string[]): { lines: string[]; status: number | null } {
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...units.map((u) => path.join(dir, u))], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, LC_ALL: 'C', SYSTEMD_COLORS: '0', SYSTEMD_LOG_COLOR: '0', SYSTEMD_PAGER: '' },
  });
  if (r.error !== undefined) throw r.error;
  const lines = `${r.stdout}\n${r.stderr}`
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return { lines, status: r.status };
}

describe('systemd units pass systemd-analyze verify', () => {
  it('the units exist', () => {
    expect(UNITS).toEqual(['modelsync-resync.service', 'modelsync-resync.timer', 'modelsync.service']);
  });

  it('systemd-analyze notices a broken unit here (the check below is not vacuous)', (ctx) => {
    if (analyze === undefined) return ctx.skip(NOT_INSTALLED);
    const dir = tempDir();
    writeFileSync(path.join(dir, 'broken.service'), '[Service]\nType=oneshot\nExecStart=/bin/true\nRestart=sometimes\nNoSuchKey=1\n');
    const { lines } = verify(dir, ['broken.service']);
    expect(lines.join('\n')).toMatch(/NoSuchKey/);
    expect(lines.join('\n')).toMatch(/sometimes/);
  });

  it('every unit verifies clean, apart from the not-yet-installed binary', (ctx) => {
    if (analyze === undefined) return ctx.skip(NOT_INSTALLED);
    // Only the unit files: a drop-in directory next to a unit would be read too (tested below).
    const dir = tempDir();
    for (const u of UNITS) cpSync(path.join(UNIT_DIR, u), path.join(dir, u));
    const { lines, status } = verify(dir, UNITS);
    const other = lines.filter((l) => !MISSING_BINARY.test(l));
    expect(other, `systemd-analyze verify said:\n${lines.join('\n')}`).toEqual([]);
    if (lines.length === 0) expect(status).toBe(0);
  });

  it('the restart back-off drop-in is clean on systemd >= 254 and only unknown to older ones', (ctx) => {
    if (analyze === undefined) return ctx.skip(NOT_INSTALLED);
    const dir = tempDir();
    cpSync(path.join(UNIT_DIR, 'modelsync.service'), path.join(dir, 'modelsync.service'));
    cpSync(DROP_IN_DIR, path.join(dir, 'modelsync.service.d'), { recursive: true });
    const { lines } = verify(dir, ['modelsync.service']);
    const report = `systemd ${analyze.version}, systemd-analyze verify said:\n${lines.join('\n')}`;
    if (analyze.version >= 254) {
      expect(lines.filter((l) => !MISSING_BINARY.test(l)), report).toEqual([]);
    } else {
      expect(lines.filter((l) => !MISSING_BINARY.test(l) && !OLD_SYSTEMD_BACKOFF.test(l)), report).toEqual([]);
      expect(lines.filter((l) => OLD_SYSTEMD_BACKOFF.test(l)), report).toHaveLength(2);
    }
  });
});

type Ini = Map<string, Map<string, string[]>>;

/** Minimal unit-file reader: sections, keys, repeated keys, line continuations, comments. */
function readUnit(file: string): Ini {
  const ini: Ini = new Map();
  let section: Map<string, string[]> | undefined;
  const text = readFileSync(file, 'utf8').replace(/\\\n/g, ' ');
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) {
      section = new Map();
      ini.set(head[1] ?? '', section);
      continue;
    }
    const eq = line.indexOf('=');
    if (section === undefined || eq < 0) throw new Error(`${file}: cannot read line: ${line}`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return ini;
}

function values(ini: Ini, section: string, key: string): string[] {
  return ini.get(section)?.get(key) ?? [];
}

function value(ini: Ini, section: string, key: string): string | undefined {
  const v = values(ini, section, key);
  return v[v.length - 1];
}

describe('modelsync.service', () => {
  const unit = readUnit(path.join(UNIT_DIR, 'modelsync.service'));

  it('runs the sync-only daemon with readiness notification', () => {
    expect(value(unit, 'Service', 'Type')).toBe('notify');
    // modelsync signals READY=1 through a systemd-notify child process.
    expect(value(unit, 'Service', 'NotifyAccess')).toBe('all');
    expect(value(unit, 'Service', 'ExecStart')).toBe('/usr/local/bin/modelsync run --manifest /etc/modelsync/manifest.yaml --models-dir /srv/comfyui/models');
    expect(value(unit, 'Service', 'ExecStart')).not.toContain(' -- ');
    expect(value(unit, 'Service', 'ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    // The first sync (= readiness) can take hours.
    expect(value(unit, 'Service', 'TimeoutStartSec')).toBe('infinity');
  });

  it('restarts on failure, but not on a bad manifest', () => {
    expect(value(unit, 'Service', 'Restart')).toBe('on-failure');
    expect(value(unit, 'Service', 'RestartSec')).toMatch(/^\d+(s|min)?$/);
    expect(value(unit, 'Service', 'RestartPreventExitStatus')).toBe('2');
    expect(value(unit, 'Service', 'RestartSteps')).toBeUndefined();
  });

  it('reads tokens from an optional env file and keeps state on local disk', () => {
    expect(values(unit, 'Service', 'EnvironmentFile')).toContain('-/etc/modelsync/env');
    expect(value(unit, 'Service', 'StateDirectory')).toBe('modelsync');
    expect(values(unit, 'Service', 'Environment')).toContain('MODELSYNC_STATE_DIR=%S/modelsync');
    expect(value(unit, 'Unit', 'RequiresMountsFor')).toBe('/srv/comfyui/models');
  });

  it('runs as a fixed system user, not a dynamic one', () => {
    expect(value(unit, 'Service', 'User')).toBe('modelsync');
    expect(value(unit, 'Service', 'DynamicUser')).toBeUndefined();
  });

  it('is sandboxed, with write access to the models volume only', () => {
    const expected: Record<string, string> = {
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ReadWritePaths: '/srv/comfyui/models',
      PrivateTmp: 'yes',
      ProtectHome: 'yes',
      PrivateDevices: 'yes',
      ProtectKernelTunables: 'yes',
      ProtectKernelModules: 'yes',
      ProtectControlGroups: 'yes',
      RestrictAddressFamilies: 'AF_UNIX AF_INET AF_INET6',
      CapabilityBoundingSet: '',
    };
    for (const [k, v] of Object.entries(expected)) expect(value(unit, 'Service', k), k).toBe(v);
    // V8's JIT needs W+X memory: this would crash Node.
    expect(value(unit, 'Service', 'MemoryDenyWriteExecute')).toBeUndefined();
    expect(value(unit, 'Install', 'WantedBy')).toBe('multi-user.target');
  });

  it('keeps the systemd >= 254 back-off keys in the drop-in', () => {
    const dropIn = readUnit(path.join(DROP_IN_DIR, '10-restart-backoff.conf'));
    expect(value(dropIn, 'Service', 'RestartSteps')).toMatch(/^\d+$/);
    expect(value(dropIn, 'Service', 'RestartMaxDelaySec')).toBeDefined();
  });
});

describe('modelsync-resync.service and .timer', () => {
  const service = readUnit(path.join(UNIT_DIR, 'modelsync-resync.service'));
  const timer = readUnit(path.join(UNIT_DIR, 'modelsync-resync.timer'));
  const daemon = readUnit(path.join(UNIT_DIR, 'modelsync.service'));

  it('is a oneshot `modelsync resync` with the daemon\'s user, paths and sandbox', () => {
    expect(value(service, 'Service', 'Type')).toBe('oneshot');
    expect(value(service, 'Service', 'ExecStart')).toMatch(/^\/usr\/local\/bin\/modelsync resync( |$)/);
    for (const k of ['User', 'Group', 'StateDirectory', 'ReadWritePaths', 'ProtectSystem', 'NoNewPrivileges', 'RestrictAddressFamilies', 'SystemCallFilter']) {
      expect(value(service, 'Service', k), k).toBe(value(daemon, 'Service', k));
    }
    expect(values(service, 'Service', 'EnvironmentFile')).toEqual(values(daemon, 'Service', 'EnvironmentFile'));
    expect(values(service, 'Service', 'Environment')).toEqual(values(daemon, 'Service', 'Environment'));
  });

  it('is started by the timer, which is enabled through timers.target', () => {
    expect(value(timer, 'Timer', 'Unit')).toBe('modelsync-resync.service');
    expect(value(timer, 'Timer', 'OnCalendar')).toBeDefined();
    expect(value(timer, 'Timer', 'RandomizedDelaySec')).toBeDefined();
    expect(value(timer, 'Install', 'WantedBy')).toBe('timers.target');
  });
});
