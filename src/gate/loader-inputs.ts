/**
 * Which node inputs name a model file, and in which of ComfyUI's model folders: the loader
 * inputs whose value the gate may read as a URL and rewrite to a local file name. Anything not in
 * these tables is never treated as a model, whatever its value looks like (a prompt's text, a
 * custom node's image URL).
 *
 * ComfyUI's own loaders first (nodes.py and comfy_extras), by class and input, because some input
 * names mean different folders on different nodes (`clip_name`: text_encoders on CLIPLoader,
 * clip_vision on CLIPVisionLoader; `model_name`: upscale_models on UpscaleModelLoader only).
 */
const BY_CLASS: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  CheckpointLoaderSimple: { ckpt_name: 'checkpoints' },
  CheckpointLoader: { ckpt_name: 'checkpoints', config_name: 'configs' },
  ImageOnlyCheckpointLoader: { ckpt_name: 'checkpoints' },
  unCLIPCheckpointLoader: { ckpt_name: 'checkpoints' },
  LoraLoader: { lora_name: 'loras' },
  LoraLoaderModelOnly: { lora_name: 'loras' },
  VAELoader: { vae_name: 'vae' },
  ControlNetLoader: { control_net_name: 'controlnet' },
  DiffControlNetLoader: { control_net_name: 'controlnet' },
  UNETLoader: { unet_name: 'diffusion_models' },
  CLIPLoader: { clip_name: 'text_encoders' },
  DualCLIPLoader: { clip_name1: 'text_encoders', clip_name2: 'text_encoders' },
  TripleCLIPLoader: { clip_name1: 'text_encoders', clip_name2: 'text_encoders', clip_name3: 'text_encoders' },
  QuadrupleCLIPLoader: { clip_name1: 'text_encoders', clip_name2: 'text_encoders', clip_name3: 'text_encoders', clip_name4: 'text_encoders' },
  CLIPVisionLoader: { clip_name: 'clip_vision' },
  UpscaleModelLoader: { model_name: 'upscale_models' },
  StyleModelLoader: { style_model_name: 'style_models' },
  GLIGENLoader: { gligen_name: 'gligen' },
  HypernetworkLoader: { hypernetwork_name: 'hypernetworks' },
  PhotoMakerLoader: { photomaker_model_name: 'photomaker' },
  ModelPatchLoader: { name: 'model_patches' },
  AudioEncoderLoader: { audio_encoder_name: 'audio_encoders' },
};

/**
 * Input names that mean one folder on any node: custom loaders reuse them (a GGUF UNet loader's
 * `unet_name`, a LoRA stacker's `lora_name`).
 */
const BY_INPUT: Readonly<Record<string, string>> = {
  ckpt_name: 'checkpoints',
  lora_name: 'loras',
  vae_name: 'vae',
  control_net_name: 'controlnet',
  unet_name: 'diffusion_models',
  style_model_name: 'style_models',
  gligen_name: 'gligen',
  hypernetwork_name: 'hypernetworks',
  upscale_model_name: 'upscale_models',
};

/** The model folder a node's input names a file in, or undefined when it is not a model input. */
export function loaderFolder(classType: string, input: string): string | undefined {
  const own = Object.hasOwn(BY_CLASS, classType) ? BY_CLASS[classType] : undefined;
  if (own !== undefined && Object.hasOwn(own, input)) return own[input];
  if (Object.hasOwn(BY_INPUT, input)) return BY_INPUT[input];
  // A custom CLIP loader (clip_name, clip_name1..4): a vision encoder only when the node says so.
  if (/^clip_name\d?$/.test(input)) return /vision/i.test(classType) ? 'clip_vision' : 'text_encoders';
  return undefined;
}

/** The whole table, for documentation and tests: `Class.input` or `*.input` -> folder. */
export function loaderTable(): ReadonlyMap<string, string> {
  const out = new Map<string, string>();
  for (const [cls, inputs] of Object.entries(BY_CLASS)) for (const [input, folder] of Object.entries(inputs)) out.set(`${cls}.${input}`, folder);
  for (const [input, folder] of Object.entries(BY_INPUT)) out.set(`*.${input}`, folder);
  out.set('*.clip_name, clip_name1..4', 'text_encoders (clip_vision when the class name says Vision)');
  return out;
}
