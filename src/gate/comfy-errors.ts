import type { NodeInput } from './prompt-models.js';

/**
 * Answers in ComfyUI's own error shape, so that its frontend and API clients show them as they
 * show ComfyUI's validation errors: `{"error": {type, message, details, extra_info},
 * "node_errors": {NODE_ID: {errors: [...], dependent_outputs, class_type}}}`.
 */

export interface ComfyErrorBody {
  readonly error: { readonly type: string; readonly message: string; readonly details: string; readonly extra_info: Record<string, unknown> };
  readonly node_errors: Record<string, ComfyNodeError>;
}

export interface ComfyNodeError {
  readonly errors: { type: string; message: string; details: string; extra_info: Record<string, unknown> }[];
  readonly dependent_outputs: string[];
  readonly class_type: string;
}

/** One model the prompt cannot have: which input asked for it, and why. */
export interface ModelFailure {
  readonly at: readonly NodeInput[];
  /** The value the input carried (a URL or a declared model's name). */
  readonly value: string;
  /** Where it would have been published, when known. */
  readonly dest: string | undefined;
  /** modelsync's stable error code (E_POLICY, E_HASH_MISMATCH, ...). */
  readonly code: string;
  readonly message: string;
}

export function comfyError(type: string, message: string, details = '', nodeErrors: Record<string, ComfyNodeError> = {}): ComfyErrorBody {
  return { error: { type, message, details, extra_info: {} }, node_errors: nodeErrors };
}

/** The 400 for a prompt some of whose models could not be had: every failure, under its node. */
export function modelFailures(failures: readonly ModelFailure[]): ComfyErrorBody {
  const nodes: Record<string, ComfyNodeError> = {};
  for (const f of failures) {
    for (const at of f.at) {
      const node = (nodes[at.nodeId] ??= { errors: [], dependent_outputs: [], class_type: at.classType });
      node.errors.push({
        type: 'model_unavailable',
        message: 'Model could not be had',
        details: `${at.input}: '${f.value}'${f.dest === undefined ? '' : ` (${f.dest})`}: ${f.message}`,
        extra_info: { input_name: at.input, received_value: f.value, dest: f.dest, code: f.code },
      });
    }
  }
  const first = failures[0];
  const details = first === undefined ? '' : `${first.dest ?? first.value}: ${first.message}${failures.length > 1 ? ` (and ${failures.length - 1} more)` : ''}`;
  return comfyError('prompt_models_unavailable', 'Models the prompt needs could not be had', details, nodes);
}
