import type { Config } from '../config.js';
import { comfyUrlFromArgs } from '../daemon/health-probe.js';
import { requireTokenBeyondLoopback } from '../daemon/request-guard.js';
import type { DaemonState } from '../daemon/state.js';
import { ModelsyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Manifest } from '../manifest/types.js';
import type { OnDemandService } from '../ondemand/service.js';
import type { Gate, PromptStats } from './gate.js';
import type { FrontendModels } from './models-port.js';

/** Where ComfyUI answers: --comfy-url, or its own --listen/--port. */
export function comfyBaseUrl(config: Config, command: readonly string[]): string {
  return config.daemon.comfyUrl ?? comfyUrlFromArgs(command.slice(1));
}

/**
 * A --gate that cannot work is refused before anything is fetched (exit 2): without a ComfyUI
 * command there is nothing to stand in front of; on ComfyUI's own port one of the two cannot
 * listen; beyond loopback without MODELSYNC_CONTROL_TOKEN anyone could make it download.
 */
export function checkGateSetup(config: Config, command: readonly string[]): void {
  const g = config.gate;
  if (g === undefined) return;
  if (command.length === 0) throw new ModelsyncError('E_USAGE', '--gate stands in front of ComfyUI: give the command that starts it (modelsync run --gate HOST:PORT -- python main.py --port 8188)');
  requireTokenBeyondLoopback(g.host, g.port, config.control.token, '--gate');
  const comfy = new URL(comfyBaseUrl(config, command));
  const comfyPort = Number(comfy.port === '' ? (comfy.protocol === 'https:' ? 443 : 80) : comfy.port);
  if (comfyPort === g.port) {
    throw new ModelsyncError('E_USAGE', `--gate ${g.host}:${g.port} is ComfyUI's own port: give ComfyUI another one (e.g. -- python main.py --port ${g.port === 8188 ? 8190 : 8188}); the gate takes the one clients use`);
  }
  if (g.port === config.control.port) throw new ModelsyncError('E_USAGE', `--gate and --control cannot share port ${g.port}`);
}

/**
 * The gate of `modelsync run --gate`, wired to the daemon's view of ComfyUI. Loaded only with
 * --gate: the proxy library has no place in a warm start without one.
 */
export async function startDaemonGate(config: Config, command: readonly string[], state: DaemonState, log: Logger, models: FrontendModels | undefined): Promise<Gate | undefined> {
  const settings = config.gate;
  if (settings === undefined) return undefined;
  const url = comfyBaseUrl(config, command);
  const [{ startGate }, { PromptGate }, { PromptPins }, { ComfyWatch }] = await Promise.all([import('./gate.js'), import('./prompt-gate.js'), import('./prompt-pins.js'), import('./comfy-watch.js')]);
  const running = (): string | undefined => (state.comfy.phase === 'running' ? url : undefined);
  const pins = new PromptPins({ comfyUrl: running, pollMs: settings.queuePollMs, maxMs: settings.pinMaxMs, log });
  const watch = models === undefined ? undefined : new ComfyWatch({ comfyUrl: running, onQueueEvent: () => pins.nudge(), log });
  const promptStats: PromptStats = {
    promptsRelayed: 0,
    promptsRefused: 0,
    get pinnedPrompts() {
      return pins.size;
    },
  };
  const prompts = models === undefined ? undefined : new PromptGate({ models, pins, modelsDir: config.modelsDir, maxPromptBytes: settings.maxPromptBytes, maxModels: settings.maxModels, log, counters: promptStats });
  // The experimental module is not even loaded without its flag.
  const frontend =
    models !== undefined && settings.frontendDownloads
      ? new (await import('./frontend-downloads.js')).FrontendDownloads({ models, modelsDir: config.modelsDir, log, credentials: { huggingface: config.hf.token !== undefined, civitai: config.httpTokens.has('civitai.com') } })
      : undefined;
  return startGate({
    settings,
    token: config.control.token,
    comfy: () => ({ url, phase: state.comfy.phase }),
    log,
    prompts,
    frontend,
    promptStats: prompts === undefined ? undefined : promptStats,
    onClose: () => {
      frontend?.close();
      watch?.close();
      pins.close();
    },
  });
}

/**
 * The on-demand service as the gate uses it, and the policy's answer without a download (the
 * frontend's availability check), from the same validators the service's submit runs.
 */
export function gateModels(service: OnDemandService, manifest: () => Manifest, hfEndpoint: string): FrontendModels {
  return {
    submit: (requests, opts) => service.submit(requests, opts),
    holder: (label) => service.holder(label),
    subscribe: (listener) => service.subscribe(listener),
    allows: async (request) => {
      const { normaliseRequests } = await import('../ondemand/normalise.js');
      try {
        normaliseRequests([request], { manifest: manifest(), hfEndpoint });
        return true;
      } catch {
        return false;
      }
    },
  };
}
