import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';

/**
 * The supervised child must not outlive the daemon, even when the daemon dies without a word
 * (SIGKILL, the OOM killer, a crash in native code): on a bare host, an orphaned ComfyUI keeps
 * its port, and the next daemon's ComfyUI crash-loops on "Address already in use".
 *
 * The mechanism is a guardian: a tiny `/bin/sh` started just before each child, in a process
 * group of its own (so a terminal's Ctrl-C, or a kill of the daemon's group, does not reach
 * it), ignoring the stop signals. Its stdin is a pipe whose other end only the daemon holds
 * (Node opens every pipe close-on-exec, so no child inherits it). It reads the child's process
 * group id, then waits for end-of-file, which the kernel delivers when the daemon is gone, for
 * whatever reason. Then it does what a graceful stop does: SIGTERM (and SIGCONT) to the whole
 * group, SIGKILL to what is left after the stop timeout. When the child ends normally the
 * daemon SIGKILLs the guardian after reaping the group, so it never acts on a group id that
 * could be reused.
 *
 * Why not PR_SET_PDEATHSIG (`setpriv --pdeathsig`): it reaches the child alone, not the workers
 * and helpers that ComfyUI and its custom nodes start in its group, it is a hard kill with no
 * time to let go of the GPU and the port cleanly, and it needs util-linux's setpriv in every
 * image. Why not a watcher in Node: 40 MB of RSS per child for what a shell does with `read`.
 *
 * Accepted risk: a daemon killed in the microseconds between the child's spawn and writing its
 * group id to the guardian leaves that child unguarded; the next daemon's port check
 * (port-holder.ts) finds it and says so.
 */
const SCRIPT = `
trap '' HUP INT QUIT TERM
IFS= read -r pgid || exit 0
case "$pgid" in ''|*[!0-9]*) exit 0 ;; esac
while IFS= read -r _; do :; done
kill -TERM -"$pgid" 2>/dev/null || exit 0
kill -CONT -"$pgid" 2>/dev/null
n=0
while [ "$n" -lt "$1" ]; do
  kill -0 -"$pgid" 2>/dev/null || exit 0
  sleep 0.1
  n=$((n + 1))
done
kill -KILL -"$pgid" 2>/dev/null
exit 0
`;

/** The guardian's command line: argv only, no environment (it needs neither secrets nor PATH tricks). */
export function guardianCommand(stopTimeoutMs: number): { readonly command: string; readonly args: readonly string[] } {
  const ticks = Math.max(1, Math.ceil(stopTimeoutMs / 100));
  return { command: '/bin/sh', args: ['-c', SCRIPT, 'modelsync-guardian', String(ticks)] };
}

/** A started guardian (see above). The supervisor spawns it; this only talks to it. */
export class ParentDeathGuard {
  private done = false;

  constructor(
    private readonly proc: ChildProcess,
    log: Logger,
  ) {
    const stdin = proc.stdin as Socket | null;
    // A guardian that died (someone killed it) must not take the daemon with it on EPIPE.
    stdin?.on('error', () => undefined);
    proc.once('exit', (code, signal) => {
      if (!this.done) log.warn({ guardianPid: proc.pid, code, signal }, 'the guardian of the child exited; the child would outlive a killed modelsync');
    });
    // Neither the guardian nor its pipe keeps the daemon alive.
    proc.unref();
    stdin?.unref();
  }

  /** From now on the daemon's death takes this process group down with it. */
  watch(pgid: number): void {
    this.proc.stdin?.write(`${pgid}\n`);
  }

  /** The group is gone (reaped by the supervisor): the guardian goes too, without acting. */
  dismiss(): void {
    if (this.done) return;
    this.done = true;
    this.proc.kill('SIGKILL');
  }
}
