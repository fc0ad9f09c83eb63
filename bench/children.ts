import type { ChildProcess } from 'node:child_process';

/**
 * Every process the bench starts, so that none outlives it: on a normal exit, an exception,
 * Ctrl-C or SIGTERM each live one is SIGKILLed by its own pid.
 */
const live = new Set<ChildProcess>();
let installed = false;

export function track(child: ChildProcess): ChildProcess {
  install();
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

export function killAll(): void {
  for (const c of live) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  live.clear();
}

function install(): void {
  if (installed) return;
  installed = true;
  process.once('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAll();
      process.stderr.write(`\nbench: ${sig}, children killed\n`);
      process.exit(130);
    });
  }
}
