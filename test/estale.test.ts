import { describe, expect, it } from 'vitest';
import type { Clock } from '../src/clock.js';
import { isTransientFsError, withReopen } from '../src/fs/estale.js';

/** A clock that records the waits instead of sleeping them. */
function recordingClock(): Clock & { waits: number[] } {
  const waits: number[] = [];
  return {
    waits,
    now: () => 0,
    sleep: (ms) => {
      waits.push(ms);
      return Promise.resolve();
    },
    random: () => 0.5,
  };
}

function fsError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: test`), { code });
}

describe('withReopen: transient network file system errors are retried by opening again', () => {
  it('retries ESTALE with a new call of the operation (a fresh open), then returns its answer', async () => {
    const clock = recordingClock();
    let opens = 0;
    const got = await withReopen(
      async () => {
        opens++;
        if (opens < 3) throw fsError('ESTALE');
        return 'bytes';
      },
      { clock },
    );
    expect(got).toBe('bytes');
    expect(opens).toBe(3);
    expect(clock.waits).toEqual([50, 100]);
  });

  it.each(['ESTALE', 'EIO', 'ETIMEDOUT', 'EAGAIN', 'EINTR'])('treats %s as transient', (code) => {
    expect(isTransientFsError(fsError(code))).toBe(true);
  });

  it('gives up after its attempts with the last error', async () => {
    const clock = recordingClock();
    let opens = 0;
    await expect(
      withReopen(
        () => {
          opens++;
          return Promise.reject(fsError('ESTALE'));
        },
        { clock, attempts: 4 },
      ),
    ).rejects.toMatchObject({ code: 'ESTALE' });
    expect(opens).toBe(4);
  });

  it.each(['ENOENT', 'EACCES', 'ENOSPC'])('does not retry %s (an answer, not a hiccup)', async (code) => {
    const clock = recordingClock();
    let opens = 0;
    await expect(
      withReopen(
        () => {
          opens++;
          return Promise.reject(fsError(code));
        },
        { clock },
      ),
    ).rejects.toMatchObject({ code });
    expect(opens).toBe(1);
    expect(clock.waits).toEqual([]);
  });
});
