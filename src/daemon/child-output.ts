import type { ChildLogs } from '../config.js';
import type { Logger } from '../log.js';
import { scrubSecrets } from '../redact.js';
import type { LineEnd } from './lines.js';

export type ChildOutput = (stream: 'stdout' | 'stderr', line: string, end: LineEnd, childPid: number) => void;

/**
 * Where ComfyUI's output goes. `passthrough`: both of its streams, line by line and otherwise
 * unchanged, on our stdout, which container log collectors treat as the application's output;
 * our own records stay alone on stderr, so that every line there is JSON. `json`: each line
 * becomes a record of our log (`msg`, `stream`, `childPid`), for pipelines that take one format.
 * Either way a known secret is replaced (a token pasted into its argv, a file it prints).
 *
 * A line is written whole, so the child's two streams never interleave inside a line; for the
 * same reason a last line without a newline, or a piece of a line cut at 64 KiB, gets one.
 */
export function childOutput(mode: ChildLogs, stdout: NodeJS.WritableStream, log: Logger, secrets: readonly string[]): ChildOutput {
  if (mode === 'json') {
    // Its own level: the child's output is not ours to filter away with --log-level.
    const records = log.child({}, { level: 'info' });
    return (stream, line, _end, childPid) => records.info({ childPid, stream }, scrubSecrets(line, secrets));
  }
  return (_stream, line, end) => {
    stdout.write(`${scrubSecrets(line, secrets)}${end === '' ? '\n' : end}`);
  };
}
