// The ComfyUI stand-in's model loaders: what /object_info lists and what POST /prompt checks, as
// ComfyUI does (folder_paths + the combo inputs of nodes.py).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Loader node -> its model inputs -> the folder whose files are the input's options. */
export const LOADERS = {
  CheckpointLoaderSimple: { ckpt_name: 'checkpoints' },
  LoraLoader: { lora_name: 'loras' },
  LoraLoaderModelOnly: { lora_name: 'loras' },
  VAELoader: { vae_name: 'vae' },
  ControlNetLoader: { control_net_name: 'controlnet' },
  UpscaleModelLoader: { model_name: 'upscale_models' },
  // ComfyUI lists the legacy "clip" folder under text_encoders.
  CLIPLoader: { clip_name: ['text_encoders', 'clip'] },
  CLIPVisionLoader: { clip_name: 'clip_vision' },
  UNETLoader: { unet_name: 'diffusion_models' },
  DualCLIPLoader: { clip_name1: ['text_encoders', 'clip'], clip_name2: ['text_encoders', 'clip'] },
};

const MODEL_EXTENSIONS = /\.(ckpt|pt|pt2|bin|pth|safetensors|pkl|sft|gguf)$/i;

/** Like os.walk(followlinks=True) + ComfyUI's extension filter: dangling links are listed too. */
export function listModels(dir, prefix = '') {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out = [];
  for (const e of entries) {
    const full = join(dir, e.name);
    let isDir = e.isDirectory();
    if (e.isSymbolicLink()) {
      try {
        isDir = statSync(full).isDirectory();
      } catch {
        isDir = false;
      }
    }
    if (isDir) out.push(...listModels(full, `${prefix}${e.name}/`));
    else if (MODEL_EXTENSIONS.test(e.name)) out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

function options(modelsDir, folders) {
  if (modelsDir === undefined) return [];
  const list = [];
  for (const f of [folders].flat()) list.push(...listModels(join(modelsDir, f)));
  return [...new Set(list)].sort();
}

export function objectInfo(modelsDir) {
  const info = {};
  for (const [node, inputs] of Object.entries(LOADERS)) {
    const required = {};
    for (const [input, folders] of Object.entries(inputs)) required[input] = [options(modelsDir, folders)];
    info[node] = { input: { required }, output: ['MODEL'], name: node, display_name: node, category: 'loaders', output_node: false };
  }
  return info;
}

/**
 * ComfyUI's validate_prompt, for the loaders above: a model input whose value is not one of its
 * folder's files is `value_not_in_list`, reported under its node, and the prompt is refused.
 */
export function validatePrompt(prompt, modelsDir) {
  const nodeErrors = {};
  for (const [id, node] of Object.entries(prompt)) {
    if (node === null || typeof node !== 'object' || typeof node.class_type !== 'string') {
      return { ok: false, error: { type: 'invalid_prompt', message: `Cannot execute because a node is missing the class_type property.: Node ID '#${id}'`, details: '', extra_info: {} }, nodeErrors: {} };
    }
    const inputs = LOADERS[node.class_type];
    if (inputs === undefined) continue;
    for (const [input, folders] of Object.entries(inputs)) {
      const value = node.inputs?.[input];
      const list = options(modelsDir, folders);
      if (typeof value === 'string' && list.includes(value)) continue;
      const listInfo = list.length > 20 ? `(list of length ${list.length})` : JSON.stringify(list).replaceAll('"', "'");
      const entry = (nodeErrors[id] ??= { errors: [], dependent_outputs: [], class_type: node.class_type });
      entry.errors.push({
        type: 'value_not_in_list',
        message: 'Value not in list',
        details: `${input}: '${String(value)}' not in ${listInfo}`,
        extra_info: { input_name: input, input_config: list.length > 20 ? null : [list], received_value: value },
      });
    }
  }
  if (Object.keys(nodeErrors).length > 0) {
    return { ok: false, error: { type: 'prompt_outputs_failed_validation', message: 'Prompt outputs failed validation', details: '', extra_info: {} }, nodeErrors };
  }
  return { ok: true };
}
