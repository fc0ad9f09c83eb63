import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The one logger. JSON lines on stderr (stdout is for command output). Secrets never reach it:
 * URLs are passed through redactUrl by their callers, and these paths are censored as a backstop.
 */
export function createLogger(level: string, destination: NodeJS.WritableStream = process.stderr): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['authorization', 'headers.authorization', '*.authorization', 'token', '*.token', 'secretAccessKey'],
        censor: '<redacted>',
      },
    },
    pino.destination({ dest: destinationFd(destination), sync: true }),
  );
}

function destinationFd(stream: NodeJS.WritableStream): number {
  return stream === process.stdout ? 1 : 2;
}

/** A logger that drops everything: for library-style callers and tests that do not care. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
