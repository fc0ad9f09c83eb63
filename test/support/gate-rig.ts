/**
 * A gate in this process in front of the ComfyUI stub as a real child process, for the gate's
 * own tests (gate-prompts, gate-frontend). `modelsync run --gate` as a whole: gate.test.ts and
 * gate-ondemand.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { GateSettings } from '../../src/config.js';
import type { GateDeps } from '../../src/gate/gate.js';
import { startGate, type Gate } from '../../src/gate/gate.js';
import { silentLogger, type Logger } from '../../src/log.js';
import { sandbox, type Sandbox } from './cli.js';
import { freePort, STUB, waitFor } from './daemon-harness.js';
import { rawRequest } from './http-get.js';

export interface GateRig {
  readonly sb: Sandbox;
  readonly comfy: string;
  readonly log: Logger;
  readonly settings: GateSettings;
  gate: Gate | undefined;
  /** Start the gate with these handlers, in front of the stub. */
  start(deps: Pick<GateDeps, 'prompts' | 'frontend' | 'onClose' | 'promptStats'> & { token?: string | undefined }): Promise<string>;
  /** SIGKILL the stub, as a crash would. */
  stopStub(): void;
  close(): Promise<void>;
}

export async function gateRig(o: { stubArgs?: string[]; settings?: Partial<GateSettings> } = {}): Promise<GateRig> {
  const sb = await sandbox();
  const port = await freePort();
  const stub: ChildProcess = spawn(process.execPath, [STUB, '--port', String(port), '--stub-models-dir', sb.models, ...(o.stubArgs ?? [])], { stdio: 'ignore' });
  const comfy = `http://127.0.0.1:${port}`;
  await waitFor('the stub', async () => (await rawRequest(`${comfy}/system_stats`).catch(() => undefined))?.status === 200);
  const settings: GateSettings = { host: '127.0.0.1', port: 0, frontendDownloads: false, maxPromptBytes: 1024 * 1024, maxModels: 8, pinMaxMs: 60_000, queuePollMs: 50, ...o.settings };
  const rig: GateRig = {
    sb,
    comfy,
    log: silentLogger(),
    settings,
    gate: undefined,
    async start(deps) {
      rig.gate = await startGate({ ...deps, settings, token: deps.token, comfy: () => ({ url: comfy, phase: 'running' }), log: rig.log });
      return rig.gate.url;
    },
    stopStub() {
      stub.kill('SIGKILL');
    },
    async close() {
      await rig.gate?.close();
      stub.kill('SIGKILL');
      await sb.cleanup();
    },
  };
  return rig;
}
