import type { Logger } from '../log.js';
import { runHelper } from './supervisor.js';

export interface Notifier {
  ready(status: string): void;
  status(status: string): void;
}

/**
 * systemd's readiness protocol for `Type=notify` units. Node has no unix datagram sockets, so
 * the messages go through `systemd-notify` (hence `NotifyAccess=all` in the unit). Without
 * NOTIFY_SOCKET this does nothing. Messages are sent in order, one helper at a time.
 */
export function systemdNotifier(socket: string | undefined, env: Readonly<Record<string, string>>, log: Logger): Notifier {
  if (socket === undefined) return { ready: () => undefined, status: () => undefined };
  let chain = Promise.resolve();
  let missing = false;
  let lastStatus = '';
  const send = (args: string[]): void => {
    chain = chain.then(async () => {
      if (missing) return;
      // --pid: the message speaks for us, not for the short-lived helper.
      const code = await runHelper('systemd-notify', [`--pid=${process.pid}`, ...args], { ...env, NOTIFY_SOCKET: socket });
      if (code === undefined) {
        missing = true;
        log.warn('NOTIFY_SOCKET is set but systemd-notify could not be run; readiness is not reported to systemd');
      } else if (code !== 0) log.warn({ code, args }, 'systemd-notify failed');
    });
  };
  let readySent = false;
  return {
    ready(status) {
      if (readySent) return;
      readySent = true;
      lastStatus = status;
      send(['--ready', `--status=${status}`]);
    },
    status(status) {
      if (status === lastStatus) return;
      lastStatus = status;
      send([`--status=${status}`]);
    },
  };
}
