import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { applySpans, scanJson } from '../src/gate/json-splice.js';
import { loaderFolder, loaderTable } from '../src/gate/loader-inputs.js';
import { REPO_ROOT } from './support/cli.js';
import { isModelUrl, urlRequest } from '../src/gate/model-url.js';
import { MAX_PROMPT_DEPTH, readPrompt } from '../src/gate/prompt-models.js';

const LORA_URL = 'https://huggingface.co/org/loras/resolve/main/style/film.safetensors';

function body(prompt: unknown, workflow?: unknown): string {
  return JSON.stringify({ client_id: 'c1', prompt, ...(workflow === undefined ? {} : { extra_data: { extra_pnginfo: { workflow } } }) });
}

describe('gate: loader inputs', () => {
  it('maps core loaders by class and input, and shared input names on any node', () => {
    expect(loaderFolder('CheckpointLoaderSimple', 'ckpt_name')).toBe('checkpoints');
    expect(loaderFolder('LoraLoaderModelOnly', 'lora_name')).toBe('loras');
    expect(loaderFolder('CLIPLoader', 'clip_name')).toBe('text_encoders');
    expect(loaderFolder('CLIPVisionLoader', 'clip_name')).toBe('clip_vision');
    expect(loaderFolder('DualCLIPLoader', 'clip_name2')).toBe('text_encoders');
    expect(loaderFolder('UpscaleModelLoader', 'model_name')).toBe('upscale_models');
    expect(loaderFolder('UnetLoaderGGUF', 'unet_name')).toBe('diffusion_models');
    expect(loaderFolder('ClipVisionLoaderCustom', 'clip_name')).toBe('clip_vision');
  });

  it('the README\'s table lists every loader input and its folder', async () => {
    const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### The gate in front of ComfyUI'), readme.indexOf('### A serverless handler'));
    const rows = section.split('\n').filter((l) => l.startsWith('| '));
    for (const [key, folder] of loaderTable()) {
      if (key.startsWith('*.clip_name')) continue;
      const [cls, input] = key.split('.') as [string, string];
      const row = rows.find((r) => (cls === '*' ? r.startsWith('| any node') : r.includes(cls)) && r.includes(`\`${input}\``));
      expect(row, key).toBeDefined();
      expect(row, key).toContain(folder);
    }
  });

  it('is no loader for anything else, whatever the input is called elsewhere', () => {
    expect(loaderFolder('CLIPTextEncode', 'text')).toBeUndefined();
    expect(loaderFolder('LoadImage', 'image')).toBeUndefined();
    // model_name is a folder only on the node that defines it.
    expect(loaderFolder('SomeCustomNode', 'model_name')).toBeUndefined();
    expect(loaderFolder('__proto__', 'toString')).toBeUndefined();
    expect(loaderFolder('LoraLoader', 'constructor')).toBeUndefined();
  });
});

describe('gate: model URLs', () => {
  it('recognises download URLs and nothing else', () => {
    for (const v of ['hf://org/r/x.safetensors', 'https://x.org/a.safetensors', 'HTTP://localhost:1/a.pt', 's3://b/k.safetensors', 'civitai://12', 'urn:air:sdxl:lora:civitai:1@2']) expect(isModelUrl(v)).toBe(true);
    for (const v of ['x.safetensors', 'sub/x.safetensors', 'file:///etc/passwd', 'ftp://x/a.safetensors', '']) expect(isModelUrl(v)).toBe(false);
  });

  it('names the file after the last path segment, in the loader\'s folder', () => {
    expect(urlRequest('hf://org/r@v1/split/loras/a.safetensors', 'loras')).toEqual({ request: { source: 'hf://org/r@v1/split/loras/a.safetensors', dest: 'loras/a.safetensors' } });
    expect(urlRequest(LORA_URL, 'loras')).toEqual({ request: { name: 'film.safetensors', url: LORA_URL, directory: 'loras' } });
    const civ = 'https://civitai.com/api/download/models/4711?type=Model&format=SafeTensor';
    expect(urlRequest(civ, 'loras')).toEqual({ request: { source: civ, dest: 'loras/civitai-4711.safetensors' } });
    expect(urlRequest('urn:air:sdxl:lora:civitai:328553@368189', 'loras')).toEqual({ request: { source: 'urn:air:sdxl:lora:civitai:328553@368189', dest: 'loras/civitai-368189.safetensors' } });
    expect(urlRequest('civitai://12?format=GGUF', 'diffusion_models')).toEqual({ request: { source: 'civitai://12?format=GGUF', dest: 'diffusion_models/civitai-12.gguf' } });
    expect(urlRequest('https://civitai.com/api/download/models/1?token=secret', 'loras')).toHaveProperty('problem');
    expect(urlRequest('https://x.org/m/a%20b.safetensors?sig=1', 'vae')).toEqual({ request: { name: 'a b.safetensors', url: 'https://x.org/m/a%20b.safetensors?sig=1', directory: 'vae' } });
  });

  it('refuses names that would leave the folder or are no model file', () => {
    for (const v of [
      'https://x.org/m/..%2F..%2Fetc%2Fx.safetensors',
      'https://x.org/m/%2e%2e',
      'https://x.org/m/a%5Cb.safetensors',
      'https://x.org/m/a%00.safetensors',
      'https://x.org/m/',
      'https://x.org/download?id=5',
      'https://x.org/m/page.html',
      'https://x.org/m/%E0%A4%A.safetensors',
      'hf://org/r/',
    ]) {
      const r = urlRequest(v, 'loras');
      expect('problem' in r, v).toBe(true);
    }
  });
});

describe('gate: JSON splicing', () => {
  it('replaces exactly the string values at the paths, keeping numbers JavaScript cannot hold', () => {
    const text = '{"prompt": {"10": {"inputs": {"seed": 18446744073709551615, "lora_name": "https://a/x.safetensors"}, "class_type": "LoraLoader"}, "2": {"inputs": {"lora_name": "https://a/x.safetensors"}}}}';
    const scan = scanJson(text, [{ path: ['prompt', '10', 'inputs', 'lora_name'], value: 'x.safetensors' }]);
    const out = applySpans(text, scan.spans);
    expect(out).toBe('{"prompt": {"10": {"inputs": {"seed": 18446744073709551615, "lora_name": "x.safetensors"}, "class_type": "LoraLoader"}, "2": {"inputs": {"lora_name": "https://a/x.safetensors"}}}}');
  });

  it('matches escaped keys, strings with quotes and backslashes, and every duplicate of a key', () => {
    const text = '{"prompt":{"1":{"inputs":{"\\u006cora_name":"a\\\\\\"b","x":"\\"lora_name\\"","lora_name":"https://b/y.safetensors"}}}}';
    const scan = scanJson(text, [{ path: ['prompt', '1', 'inputs', 'lora_name'], value: 'y "q".safetensors' }]);
    expect(scan.spans).toHaveLength(2);
    const parsed = JSON.parse(applySpans(text, scan.spans)) as { prompt: Record<string, { inputs: Record<string, string> }> };
    expect(parsed.prompt['1']?.inputs).toEqual({ lora_name: 'y "q".safetensors', x: '"lora_name"' });
  });

  it('counts nesting without recursion, however deep', () => {
    const n = 200_000;
    expect(scanJson('['.repeat(n) + ']'.repeat(n)).depth).toBe(n);
    expect(scanJson('{"a":[1,{"b":"]]]"}]}').depth).toBe(3);
  });
});

describe('gate: reading a prompt', () => {
  it('collects URL inputs of loaders and the declared models the prompt uses', () => {
    const wf = { nodes: [{ type: 'VAELoader', properties: { models: [{ name: 'ae.safetensors', url: 'https://huggingface.co/o/r/resolve/main/ae.safetensors', directory: 'vae' }] } }], models: [{ name: 'unused.safetensors', url: 'https://h/unused.safetensors', directory: 'loras' }] };
    const r = readPrompt(
      body(
        {
          '1': { class_type: 'LoraLoader', inputs: { lora_name: LORA_URL, model: ['2', 0], strength_model: 1 } },
          '2': { class_type: 'VAELoader', inputs: { vae_name: 'ae.safetensors' } },
          '3': { class_type: 'CLIPTextEncode', inputs: { text: 'https://example.org/not-a-model.safetensors' } },
          '4': { class_type: 'LoadImageFromUrl', inputs: { url: 'https://example.org/cat.png' } },
        },
        wf,
      ),
      64,
    );
    expect(r.kind).toBe('models');
    if (r.kind !== 'models') return;
    expect(r.urlInputs.map((u) => [u.nodeId, u.input, u.folder, u.problem])).toEqual([['1', 'lora_name', 'loras', undefined]]);
    expect(r.declared.map((d) => [d.model.directory, d.model.name, d.users.map((u) => u.nodeId)])).toEqual([['vae', 'ae.safetensors', ['2']]]);
  });

  it('relays what it has no business with, refuses what it cannot read', () => {
    expect(readPrompt(body({ '1': { class_type: 'KSampler', inputs: { seed: 1 } } }), 64).kind).toBe('relay');
    expect(readPrompt('{"client_id": "x"}', 64).kind).toBe('relay');
    expect(readPrompt('{"prompt": "text"}', 64).kind).toBe('relay');
    expect(readPrompt('not json', 64)).toMatchObject({ kind: 'invalid', type: 'invalid_prompt' });
    const deep = `{"prompt": ${'['.repeat(MAX_PROMPT_DEPTH + 1)}${']'.repeat(MAX_PROMPT_DEPTH + 1)}}`;
    expect(readPrompt(deep, 64)).toMatchObject({ kind: 'invalid', type: 'prompt_too_deep' });
  });

  it('refuses thousands of URLs before asking for any', () => {
    const prompt: Record<string, unknown> = {};
    for (let i = 0; i < 3000; i++) prompt[String(i)] = { class_type: 'LoraLoader', inputs: { lora_name: `https://x.org/${i}.safetensors` } };
    expect(readPrompt(body(prompt), 64)).toMatchObject({ kind: 'invalid', type: 'prompt_too_many_models' });
    // The same URL in many nodes is one model.
    const same: Record<string, unknown> = {};
    for (let i = 0; i < 3000; i++) same[String(i)] = { class_type: 'LoraLoader', inputs: { lora_name: LORA_URL } };
    expect(readPrompt(body(same), 64).kind).toBe('models');
  });
});
