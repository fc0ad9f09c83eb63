/**
 * hostile-world.md: "the daemon killed with SIGKILL -> its child dies too; the next daemon
 * starts clean" (issue 13, class 11). A bare host, no init, no systemd cgroup: only modelsync's
 * own guardian can take ComfyUI (and what ComfyUI started in its group) down with it; and a
 * ComfyUI that still holds its port from before must be named, not crash-looped against.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processAlive } from '../../src/daemon/process-group.js';
import { accepting, findListener } from '../../src/daemon/port-holder.js';
import { leakedSecrets, runCli, sandbox, type Sandbox } from '../support/cli.js';
import { freePort, killAll, readRecord, startRun, STUB, waitFor } from '../support/daemon-harness.js';

let sb: Sandbox | undefined;
const strays: ChildProcess[] = [];

afterEach(async () => {
  await killAll();
  for (const p of strays.splice(0)) {
    if (p.pid !== undefined && processAlive(p.pid)) {
      for (const target of [-p.pid, p.pid]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
    }
  }
  await sb?.cleanup();
  sb = undefined;
});

function stubArgs(s: Sandbox, port: number, name: string, extra: string[] = []): { args: string[]; record: string } {
  const record = path.join(s.dir, `${name}.json`);
  return { args: [process.execPath, STUB, '--listen', '127.0.0.1', '--port', String(port), '--stub-record', record, ...extra], record };
}

async function running(record: string): Promise<{ pid: number; grandchildPid: number | null; port: number }> {
  return waitFor('the stub to listen', async () => {
    const r = await readRecord(record);
    return r?.port ? { pid: r.pid, grandchildPid: r.grandchildPid, port: r.port } : undefined;
  });
}

/** A ComfyUI started outside modelsync (by hand, or by a daemon from before this fix). */
async function strayComfy(s: Sandbox, port: number): Promise<{ proc: ChildProcess; pid: number }> {
  const st = stubArgs(s, port, 'stray');
  const proc = spawn(st.args[0] as string, st.args.slice(1), { detached: true, stdio: 'ignore' });
  strays.push(proc);
  const r = await running(st.record);
  return { proc, pid: r.pid };
}

describe('the supervised child never outlives the daemon (issue 13, class 11)', () => {
  it('SIGKILL of `modelsync run` takes ComfyUI and its whole group down; the next run starts clean on the same port', async () => {
    sb = await sandbox();
    await sb.writeManifest([]);
    const comfyPort = await freePort();
    const first = stubArgs(sb, comfyPort, 'first', ['--stub-spawn-grandchild']);
    const d = startRun(['--stop-timeout', '2', '--', ...first.args], sb.env(), await freePort(), [first.record]);
    const stub = await running(first.record);
    await waitFor('ComfyUI answering', async () => (await d.get('/readyz'))?.status === 200);
    expect(stub.grandchildPid).not.toBeNull();
    d.child.kill('SIGKILL');
    await d.exited;
    // No timing asserted: only that they go, and the port with them.
    await waitFor('ComfyUI to die with the daemon', () => !processAlive(stub.pid), 15_000);
    await waitFor('its grandchild to die too', () => !processAlive(stub.grandchildPid as number), 15_000);
    await waitFor('the port to be free', async () => !(await accepting('127.0.0.1', comfyPort)), 15_000);

    const second = stubArgs(sb, comfyPort, 'second');
    const again = startRun(['--stop-timeout', '2', '--', ...second.args], sb.env(), await freePort(), [second.record]);
    const stub2 = await running(second.record);
    await waitFor('the new ComfyUI answering', async () => (await again.get('/readyz'))?.status === 200);
    expect(stub2.pid).not.toBe(stub.pid);
    expect(again.stderr()).not.toMatch(/Address already in use|EADDRINUSE|is taken by/);
    again.signal('SIGTERM');
    await again.exited;
    expect(processAlive(stub2.pid)).toBe(false);
    expect(leakedSecrets(d.stdout(), d.stderr(), again.stdout(), again.stderr())).toEqual([]);
  });

  it('a ComfyUI that ignores SIGTERM is SIGKILLed by the guardian once the stop timeout has passed', async () => {
    sb = await sandbox();
    await sb.writeManifest([]);
    const st = stubArgs(sb, await freePort(), 'stubborn', ['--stub-ignore-sigterm']);
    const d = startRun(['--stop-timeout', '1', '--', ...st.args], sb.env(), await freePort(), [st.record]);
    const stub = await running(st.record);
    await waitFor('ComfyUI answering', async () => (await d.get('/readyz'))?.status === 200);
    d.child.kill('SIGKILL');
    await d.exited;
    await waitFor('the stubborn ComfyUI to be killed', () => !processAlive(stub.pid), 15_000);
  });

  it('a ComfyUI from before still holding the port: run names it (pid, command), waits the stop timeout, exits 1 without starting another', async () => {
    sb = await sandbox();
    await sb.writeManifest([]);
    const comfyPort = await freePort();
    const stray = await strayComfy(sb, comfyPort);
    expect(findListener(comfyPort)?.pid).toBe(stray.pid);
    const ours = stubArgs(sb, comfyPort, 'ours');
    const r = await runCli(['run', '--control', `127.0.0.1:${await freePort()}`, '--stop-timeout', '1', '--', ...ours.args], sb.env(), { timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^modelsync: not starting ComfyUI: its port 127\\.0\\.0\\.1:${comfyPort} is held by pid ${stray.pid} \\(.*comfy-stub\\.mjs.*\\), still after \\d+ s`, 'm'));
    expect(r.stderr).not.toContain('internal error');
    // Ours never ran: no record, and the stray is untouched (it is not ours to kill).
    await expect(readFile(ours.record)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(processAlive(stray.pid)).toBe(true);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  });

  it('a ComfyUI from before that goes away while run waits: ours starts once the port is free', async () => {
    sb = await sandbox();
    await sb.writeManifest([]);
    const comfyPort = await freePort();
    const stray = await strayComfy(sb, comfyPort);
    const ours = stubArgs(sb, comfyPort, 'ours');
    const d = startRun(['--stop-timeout', '30', '--', ...ours.args], sb.env(), await freePort(), [ours.record]);
    await waitFor('the daemon to see the port taken', () => d.stderr().includes(`is taken by pid ${stray.pid}`));
    // Not ready while the stray answers in our child's place.
    expect((await d.get('/readyz'))?.status).toBe(503);
    process.kill(stray.pid, 'SIGKILL');
    const stub = await running(ours.record);
    await waitFor('our ComfyUI answering', async () => (await d.get('/readyz'))?.status === 200);
    expect(stub.pid).not.toBe(stray.pid);
  });
});
