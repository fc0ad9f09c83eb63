import { afterAll, afterEach } from 'vitest';
import { FAKE_HF_TOKEN, sandbox as makeSandbox, type Sandbox } from './cli.js';
import { startHub, type Hub } from './hub.js';

export interface HubSandbox {
  readonly hub: Hub;
  /** As cli.ts's sandbox(), and removed after the test (or hook) that made it. */
  sandbox(hubEndpoint?: string): Promise<Sandbox>;
}

/**
 * A test file's Hub stand-in and the sandboxes its tests make, set up the one way:
 *
 *   const { hub, sandbox } = await useHubSandbox();
 *
 * The Hub starts once for the file (at the top-level await) and accepts the fake HF_TOKEN every
 * sandbox sets; after each test its faults and metadata lies are cleared and every sandbox made
 * through here is removed; after the file it closes. A file's own afterEach (killing children,
 * say) runs before this one's, as hooks run in reverse order of registration.
 */
export async function useHubSandbox(): Promise<HubSandbox> {
  const hub = await startHub();
  hub.tokens.valid.add(FAKE_HF_TOKEN);
  const made: Sandbox[] = [];
  afterAll(async () => {
    await hub.close();
  });
  afterEach(async () => {
    hub.clearFaults();
    hub.lies.clear();
    await Promise.all(made.splice(0).map((s) => s.cleanup()));
  });
  return {
    hub,
    async sandbox(hubEndpoint) {
      const s = await makeSandbox(hubEndpoint);
      made.push(s);
      return s;
    },
  };
}
