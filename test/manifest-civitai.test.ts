import { describe, expect, it } from 'vitest';
import { parseManifest } from '../src/manifest/load.js';
import { applyLock, lockDrift, type LockFile } from '../src/manifest/lock.js';
import { ManifestError } from '../src/manifest/manifest-error.js';
import { parseSourceUri } from '../src/manifest/source-uri.js';

/** Civitai sources in the manifest and the lock (issue 16, part 1): every form, and what is refused. */

const H = 'c'.repeat(64);

function problems(models: unknown[]): { field: string; message: string }[] {
  try {
    parseManifest(JSON.stringify({ version: 1, models }), '/m/models.json');
  } catch (e) {
    if (e instanceof ManifestError) return e.problems.map((p) => ({ field: p.field, message: p.message }));
    throw e;
  }
  return [];
}

describe('civitai source forms', () => {
  it.each([
    ['civitai://130072', { versionId: 130072, modelId: undefined, query: {} }],
    ['civitai://130072?type=Model&format=SafeTensor&size=pruned&fp=fp16', { versionId: 130072, query: { type: 'Model', format: 'SafeTensor', size: 'pruned', fp: 'fp16' } }],
    ['urn:air:sdxl:lora:civitai:328553@368189', { versionId: 368189, modelId: 328553, query: {} }],
    ['urn:air:flux1:checkpoint:civitai:618692@691639.safetensors', { versionId: 691639, modelId: 618692, query: { format: 'SafeTensor' } }],
    ['https://civitai.com/api/download/models/128713?type=Model&format=SafeTensor', { versionId: 128713, query: { type: 'Model', format: 'SafeTensor' } }],
    ['https://www.civitai.com/api/download/models/128713/', { versionId: 128713 }],
    ['https://civitai.com/models/4201/realistic-vision?modelVersionId=130072', { versionId: 130072, modelId: 4201 }],
    ['https://civitai.com/api/v1/model-versions/130072', { versionId: 130072 }],
  ])('%s', (uri, want) => {
    expect(parseSourceUri(uri)).toMatchObject({ kind: 'civitai', uri, ...want });
  });

  it('other civitai.com URLs are plain https sources', () => {
    expect(parseSourceUri('https://civitai.com/api/download/training-data/5')).toMatchObject({ kind: 'https' });
  });

  it.each([
    ['civitai://abc', /bad Civitai model version id/],
    ['civitai://0', /bad Civitai model version id/],
    ['civitai://12?colour=red', /unknown parameter "colour"/],
    ['civitai://12?type=%2F..%2Fx', /bad type/],
    ['https://civitai.com/api/download/models/12?token=SECRETdoNotEcho', /CIVITAI_TOKEN/],
    ['https://civitai.com/models/4201', /not one of its versions: add \?modelVersionId=/],
    ['urn:air:sdxl:lora:civitai:328553', /no version: add @VERSION/],
    ['urn:air:sdxl:lora:huggingface:1@2', /only civitai/],
    ['urn:air:sdxl:lora:civitai:1@2:layer', /layers are not supported/],
    ['urn:air:sdxl:lora:civitai:1@2.exe', /unknown AIR format/],
  ])('refuses %s', (uri, why) => {
    const r = parseSourceUri(uri);
    expect(r).toHaveProperty('error');
    expect((r as { error: string }).error).toMatch(why);
    expect((r as { error: string }).error).not.toContain('SECRETdoNotEcho');
  });
});

describe('manifest rules for civitai entries', () => {
  it('dest may be left out for civitai entries only; then the entry waits for its dest in `unplaced`', () => {
    const m = parseManifest(JSON.stringify({ version: 1, models: [{ source: 'civitai://5' }, { source: 'civitai://6', dest: 'loras/six.safetensors' }] }), '/m/models.json');
    expect(m.unplaced.map((e) => e.source.versionId)).toEqual([5]);
    expect(m.entries.map((e) => e.dest)).toEqual(['loras/six.safetensors']);
    expect(problems([{ source: `https://example.org/x.safetensors`, sha256: H }])).toEqual([{ field: 'dest', message: expect.stringMatching(/only civitai entries may leave it out/) as string }]);
  });

  it('civitai entries need no sha256; `file:` is a file name, and only for civitai entries', () => {
    expect(problems([{ source: 'civitai://5', file: 'a.safetensors' }])).toEqual([]);
    expect(problems([{ source: 'civitai://5', file: '../a.safetensors' }])).toEqual([{ field: 'file', message: 'contains a path separator' }]);
    expect(problems([{ source: 'civitai://5', file: '.hidden' }])).toEqual([{ field: 'file', message: expect.stringMatching(/hidden/) as string }]);
    expect(problems([{ source: 'hf://a/b/c.safetensors', dest: 'loras/c.safetensors', file: 'c.safetensors' }])).toEqual([{ field: 'file', message: 'is only for civitai sources' }]);
  });

  it('what the manifest already says is pickle needs allow_pickle at load', () => {
    expect(problems([{ source: 'civitai://5?format=PickleTensor' }]).map((p) => p.field)).toEqual(['allow_pickle']);
    expect(problems([{ source: 'civitai://5', file: 'old.ckpt' }]).map((p) => p.field)).toEqual(['allow_pickle']);
    expect(problems([{ source: 'civitai://5', file: 'old.ckpt', allow_pickle: true }])).toEqual([]);
  });
});

describe('a lock for derived dests', () => {
  const manifest = parseManifest(JSON.stringify({ version: 1, models: [{ source: 'civitai://5' }, { source: 'civitai://5', file: 'vae.safetensors' }] }), '/m/models.json');
  const pin = (dest: string, file: string | undefined, name: string): LockFile['entries'][number] => ({
    source: 'civitai://5',
    dest,
    size: 10,
    sha256: H,
    sha256From: 'civitai',
    civitai: { version: 5, file: name, type: 'Model' },
    destDerived: true,
    ...(file === undefined ? {} : { file }),
  });
  const lock = (a: string, b: string): LockFile => ({ lockVersion: 1, manifest: 'models.json', entries: [pin(a, undefined, 'main.safetensors'), pin(b, 'vae.safetensors', 'vae.safetensors')] });

  it('places both entries of one source by their file, pinned, with no network', () => {
    expect(lockDrift(manifest, lock('loras/main.safetensors', 'vae/vae.safetensors'))).toEqual([]);
    const applied = applyLock(manifest, lock('loras/main.safetensors', 'vae/vae.safetensors'));
    expect(applied.unplaced).toEqual([]);
    expect(applied.entries.map((e) => [e.dest, e.derived, e.pinned?.civitai?.file])).toEqual([
      ['loras/main.safetensors', true, 'main.safetensors'],
      ['vae/vae.safetensors', true, 'vae.safetensors'],
    ]);
  });

  it.each([
    ['../../etc/x', /contains "\.\."/],
    ['loras/old.ckpt', /pickle/],
    ['nowhere/x.safetensors', /unknown top folder/],
  ])('a lock whose derived dest is %s does not apply (it is input like any written dest)', (dest, why) => {
    const drift = lockDrift(manifest, lock(dest, 'vae/vae.safetensors'));
    expect(drift.join('\n')).toMatch(why);
  });
});
