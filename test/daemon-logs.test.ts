import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FAKE_HF_TOKEN, sandbox, type Sandbox } from './support/cli.js';
import { freePort, killAll, readRecord, startRun, STUB, waitFor, type RunningDaemon } from './support/daemon-harness.js';
import { duplicateKey, jsonLines } from './support/json-lines.js';

let sb: Sandbox | undefined;

afterEach(async () => {
  await killAll();
  await sb?.cleanup();
  sb = undefined;
});

/** The stub's argv with its own port and record; `extra` are its --stub-* flags. */
async function stub(s: Sandbox, ...extra: string[]): Promise<{ args: string[]; record: string }> {
  const port = await freePort();
  const record = path.join(s.dir, `stub-${port}.json`);
  return { args: [process.execPath, STUB, '--listen', '127.0.0.1', '--port', String(port), '--stub-record', record, ...extra], record };
}

const ready = (d: RunningDaemon) => async (): Promise<boolean> => (await d.get('/readyz'))?.status === 200;
const text = (s: string): string => JSON.stringify(s);

describe('log lines', () => {
  it('finds a key given twice, at any depth', () => {
    expect(duplicateKey('{"pid":1,"a":{"b":1},"pid":2}')).toBe('pid');
    expect(duplicateKey('{"a":{"b":1,"b":2}}')).toBe('b');
    expect(duplicateKey('{"a":[{"b":1},{"b":2}],"c":"pid,\\"pid\\":"}')).toBeUndefined();
    expect(() => jsonLines('{"msg":"x"}\nnot json\n')).toThrow(/line 2 is not JSON/);
  });
});

describe('ComfyUI output and modelsync records', () => {
  it("passes ComfyUI's output through unchanged on stdout, keeps stderr all JSON, and flushes a last partial line on SIGTERM", async () => {
    sb = await sandbox();
    await sb.writeManifest([]);
    const s = await stub(sb, '--stub-stdout', text(`token ${FAKE_HF_TOKEN} in a line\nfirst\n\n\nafter two empty lines\r\n 10%|#\r 20%|##\r`), '--stub-stderr', text('WARNING: on stderr\n'), '--stub-last-words', text('\nshutting down, no newline at the end'));
    const d = startRun(['--', ...s.args], sb.env(), await freePort(), [s.record]);
    await waitFor('/readyz', ready(d));
    const rec = await waitFor('the stub record', () => readRecord(s.record));
    await waitFor('the stub output', () => d.stdout().includes('WARNING: on stderr\n') && d.stdout().includes(' 20%|##\r'));
    d.signal('SIGTERM');
    expect((await d.exited).code).toBe(0);

    const out = d.stdout();
    // Each line as the child wrote it: empty lines, CRLF and a progress bar's bare CRs included.
    // (The child's two streams share our stdout: whole lines of one may come between the other's.)
    expect(out).toContain('\nfirst\n\n\nafter two empty lines\r\n');
    expect(out).toMatch(/(^|[\n\r]) 10%\|#\r/);
    expect(out).toMatch(/(^|[\n\r]) 20%\|##\r/);
    expect(out).toContain('token <redacted> in a line\n');
    expect(out).toContain('WARNING: on stderr\n');
    expect(out).toContain('Starting server\n');
    // The line the child was writing as it exited on SIGTERM, ended for it.
    expect(out.endsWith('\nshutting down, no newline at the end\n')).toBe(true);
    expect(out).not.toContain(FAKE_HF_TOKEN);
    expect(out).not.toMatch(/"level":/);

    const records = jsonLines(d.stderr());
    expect(records.length).toBeGreaterThan(3);
    expect(records.every((r) => r.pid === d.child.pid)).toBe(true);
    expect(records).toContainEqual(expect.objectContaining({ msg: 'child started', childPid: rec.pid }));
    expect(records).toContainEqual(expect.objectContaining({ msg: 'ComfyUI exited', childPid: rec.pid, code: 0 }));
    expect(d.stderr()).not.toContain(FAKE_HF_TOKEN);
  });

  it('--child-logs json wraps every child line into a record, empty lines and the last partial line at exit included', async () => {
    sb = await sandbox();
    await sb.writeManifest([]);
    const s = await stub(sb, '--stub-stdout', text(`one\n\ntwo ${FAKE_HF_TOKEN}\n`), '--stub-last-words', text('partial at exit'), '--stub-stderr', text('on stderr\n'), '--stub-crash-after-ms', '300', '--stub-exit-code', '0');
    // --log-level error: the child's records are not ours to filter.
    const d = startRun(['--child-logs', 'json', '--log-level', 'error', '--restart', 'never', '--', ...s.args], sb.env(), await freePort(), [s.record]);
    expect((await d.exited).code).toBe(0);
    const rec = await readRecord(s.record);
    expect(d.stdout()).toBe('');
    const records = jsonLines(d.stderr());
    const child = records.filter((r) => r.childPid === rec?.pid && typeof r.stream === 'string').map((r) => `${String(r.stream)}:${String(r.msg)}`);
    expect(child).toEqual(expect.arrayContaining(['stdout:one', 'stdout:', 'stdout:two <redacted>', 'stdout:partial at exit', 'stderr:on stderr', 'stdout:Starting server']));
    // In order, per stream.
    const stdoutLines = child.filter((l) => l.startsWith('stdout:'));
    expect(stdoutLines.indexOf('stdout:one')).toBeLessThan(stdoutLines.indexOf('stdout:'));
    expect(stdoutLines.indexOf('stdout:two <redacted>')).toBeLessThan(stdoutLines.indexOf('stdout:partial at exit'));
    expect(records.every((r) => r.pid === d.child.pid)).toBe(true);
    expect(d.stderr()).not.toContain(FAKE_HF_TOKEN);
    // Nothing of modelsync's own below --log-level error.
    expect(records.filter((r) => typeof r.stream !== 'string' && (r.level as number) < 50)).toEqual([]);
  });
});
