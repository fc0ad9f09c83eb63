import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import { clearStatusLine } from './status-line.js';

export type { Logger };

export interface LoggerOptions {
  /** JSON lines (the default), or pino-pretty's human-readable text. */
  readonly format?: 'json' | 'pretty' | undefined;
  /** Colours, for `pretty` only. */
  readonly color?: boolean | undefined;
}

/**
 * The one logger, on stderr (stdout is for command output and ComfyUI's own). JSON lines, one
 * object per line with unique keys (`pid` is modelsync's; the child's is `childPid`), or, on a
 * terminal, pino-pretty's text. Secrets never reach it: URLs are passed through redactUrl by
 * their callers, and these paths are censored as a backstop.
 */
export function createLogger(level: string, opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['authorization', 'headers.authorization', '*.authorization', 'token', '*.token', 'secretAccessKey'],
        censor: '<redacted>',
      },
    },
    stderrDestination(opts.format === 'pretty' ? prettifier(opts.color === true) : undefined),
  );
}

/**
 * fd 2, written synchronously: a record is out before the next line of code runs, and nothing is
 * lost at exit. pino-pretty's formatting function, not its stream: the stream is a transform
 * that writes on a later tick.
 */
function stderrDestination(format: ((record: string) => string) | undefined): DestinationStream {
  const fd2 = pino.destination({ dest: 2, sync: true });
  return { write: (record: string) => fd2.write(clearStatusLine() + (format ? format(record) : record)) };
}

/** Loaded only here: most runs are not on a terminal. */
function prettifier(colorize: boolean): (record: string) => string {
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as { prettyFactory: (o: Record<string, unknown>) => (record: string) => string };
  return prettyFactory({ colorize, ignore: 'hostname', translateTime: 'SYS:HH:MM:ss.l' });
}

/** A logger that drops everything: for library-style callers and tests that do not care. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
