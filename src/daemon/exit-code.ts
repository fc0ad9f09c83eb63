import { constants } from 'node:os';
import type { SupervisionEnd } from './supervisor.js';

/** `run` gave up on a child that kept failing (design.md): its own code, like 1 and 2. */
export const EXIT_GAVE_UP = 3;

/**
 * `run`'s exit code once the child's supervision has ended. The child's own code is passed on
 * (0, 128+signal, 126/127 when it could not be started, anything above 3), except where it
 * would read as one of modelsync's: a child exiting 1, 2 or 3 is reported as 3, so that an
 * orchestrator or a `RestartPreventExitStatus=2` never takes a ComfyUI failure for a bad
 * manifest (2) or a failed sync (1). The log and /status keep the child's real code.
 */
export function runExitCode(end: SupervisionEnd): number {
  if (end.reason === 'gave-up') return EXIT_GAVE_UP;
  if (end.code >= 1 && end.code <= EXIT_GAVE_UP) return EXIT_GAVE_UP;
  return end.code;
}

/**
 * `run`'s exit code when it was stopped (a signal, or stop()) rather than ended by its child:
 * in the entrypoint mode 128+signal, as a shell reports a process a signal ended; otherwise 0.
 */
export function stopCode(mode: 'entrypoint' | 'service', sig: NodeJS.Signals | undefined): number {
  if (mode === 'service' || sig === undefined) return 0;
  return 128 + (constants.signals[sig] ?? 0);
}
