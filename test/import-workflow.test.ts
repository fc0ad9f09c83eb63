import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { sourceFromUrl, workflowModels } from '../src/comfy/workflow-models.js';
import { parseManifest } from '../src/manifest/load.js';
import { runCli, sandbox } from './support/cli.js';
import { thrown } from './support/thrown.js';

const H = 'c'.repeat(64);
const WORKFLOW = {
  nodes: [
    {
      type: 'CheckpointLoaderSimple',
      properties: { models: [{ name: 'sd_xl_base_1.0.safetensors', url: 'https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors', directory: 'checkpoints' }] },
    },
    { type: 'UpscaleModelLoader', properties: { models: [{ name: '4x.pth', url: 'https://example.org/4x.pth', directory: 'upscale_models', hash: H, hash_type: 'SHA256' }] } },
  ],
  definitions: { subgraphs: [{ nodes: [{ properties: { models: [{ name: 'vae.safetensors', url: 'https://huggingface.co/org/vae/resolve/refs%2Fpr%2F2/sub/vae.safetensors', directory: 'vae' }] } }] }] },
  models: [{ name: 'sd_xl_base_1.0.safetensors', url: 'https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors', directory: 'checkpoints' }],
};

describe('import-workflow', () => {
  it('collects embedded models from nodes, subgraphs and the top-level list, once each', () => {
    const ms = workflowModels(WORKFLOW);
    expect(ms.map((m) => `${m.directory}/${m.name}`).sort()).toEqual(['checkpoints/sd_xl_base_1.0.safetensors', 'upscale_models/4x.pth', 'vae/vae.safetensors']);
  });

  it('maps Hub URLs to hf:// sources', () => {
    expect(sourceFromUrl('https://huggingface.co/org/name/resolve/main/a/b.safetensors')).toBe('hf://org/name/a/b.safetensors');
    expect(sourceFromUrl('https://huggingface.co/datasets/org/ds/resolve/v1/x.bin')).toBe('hf://datasets/org/ds@v1/x.bin');
    expect(sourceFromUrl('https://huggingface.co/org/vae/resolve/refs%2Fpr%2F2/vae.safetensors')).toBe('hf://org/vae@refs%2Fpr%2F2/vae.safetensors');
    expect(sourceFromUrl('https://civitai.com/api/download/models/1')).toBe('https://civitai.com/api/download/models/1');
  });

  it('writes a manifest that validates once the pickle entry is reviewed', async () => {
    const sb = await sandbox();
    try {
      const wf = path.join(sb.dir, 'wf.json');
      const out = path.join(sb.dir, 'imported.yaml');
      await writeFile(wf, JSON.stringify(WORKFLOW));
      const r = await runCli(['import-workflow', wf, '-o', out], sb.env());
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/review upscale_models\/4x\.pth: pickle format/);
      const text = await readFile(out, 'utf8');
      expect(text).toContain('# pickle format');
      expect(thrown(() => parseManifest(text, out))).toMatchObject({ code: 'E_MANIFEST', problems: [expect.objectContaining({ field: 'allow_pickle' })] });
      const doc = parse(text) as { models: Record<string, unknown>[] };
      const up = doc.models.find((m) => m.dest === 'upscale_models/4x.pth');
      expect(up?.sha256).toBe(H);
      if (up) up.allow_pickle = true;
      expect(parseManifest(JSON.stringify(doc), out).entries).toHaveLength(3);
    } finally {
      await sb.cleanup();
    }
  });

  it('comfy-paths prints an extra_model_paths.yaml for the models dir', async () => {
    const sb = await sandbox();
    try {
      const r = await runCli(['comfy-paths'], sb.env());
      expect(r.code).toBe(0);
      const y = parse(r.stdout) as { modelsync: Record<string, unknown> };
      expect(y.modelsync.base_path).toBe(sb.models);
      expect(y.modelsync.checkpoints).toBe('checkpoints/');
      expect(y.modelsync.text_encoders).toBe('text_encoders/\nclip/\n');
    } finally {
      await sb.cleanup();
    }
  });
});
