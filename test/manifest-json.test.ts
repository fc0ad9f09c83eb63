/**
 * JSON manifests read by JSON.parse (manifest/load.ts): the same manifest the YAML parser gives,
 * and every problem still reported with its line, the YAML parser's refusal of a key given
 * twice included.
 */
import { describe, expect, it } from 'vitest';
import { ManifestError } from '../src/manifest/manifest-error.js';
import { hasDuplicateKeys, parseManifest } from '../src/manifest/load.js';

const H = 'b'.repeat(64);

const doc = {
  version: 1,
  folders: ['extra_models'],
  s3: { endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', path_style: true },
  models: [
    { source: 'hf://org/name@main/a.safetensors', dest: 'checkpoints/a.safetensors' },
    { source: 'https://example.org/x.pth', dest: 'upscale_models/x.pth', sha256: H, allow_pickle: true, required: false },
    { source: 's3://bucket-a/k\u00fc/"q".safetensors', dest: 'extra_models/q.safetensors', sha256: H },
  ],
};

function problemsOf(text: string): ManifestError['problems'] {
  try {
    parseManifest(text, 'm.json');
  } catch (e) {
    if (e instanceof ManifestError) return e.problems;
    throw e;
  }
  return [];
}

describe('JSON manifests', () => {
  it('give the manifest the YAML parser gives for the same text', () => {
    const json = JSON.stringify(doc, null, 2);
    // A comment line makes it YAML to JSON.parse, so this one takes the YAML parser's path.
    expect(parseManifest(json, 'm.json')).toEqual(parseManifest(`# yaml\n${json}`, 'm.json'));
  });

  it('a key given twice is refused with its line, as the YAML parser refuses it', () => {
    const json = '{\n  "version": 1,\n  "models": [\n    {"source": "hf://o/n/a.safetensors",\n     "dest": "loras/a.safetensors",\n     "dest": "loras/b.safetensors"}\n  ]\n}\n';
    const p = problemsOf(json);
    expect(p).toHaveLength(1);
    expect(p[0]).toMatchObject({ field: 'syntax', line: 6 });
  });

  it('a problem in JSON is placed on its line', () => {
    const json = JSON.stringify({ version: 1, models: [doc.models[0], { source: 'ftp://x/y', dest: 'loras/y.safetensors' }] }, null, 2);
    const p = problemsOf(json);
    expect(p).toEqual([expect.objectContaining({ entry: 1, field: 'source' })]);
    expect(json.split('\n')[(p[0]?.line ?? 0) - 1]).toContain('ftp://x/y');
  });

  it.each([
    ['{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}', false],
    ['{"a": 1, "a": 2}', true],
    ['{"a": "x", "b": {"c": 1, "c": 2}}', true],
    ['{"a\\u0062": 1, "ab": 2}', true],
    ['{"k": "\\"a\\": 1, \\"a\\"", "a": [1, "a", {"a": 1}]}', false],
    ['{"x": [{"a": 1, "b": 2}, {"b": 3, "b": 4}]}', true],
  ])('hasDuplicateKeys(%s) is %s', (json, twice) => {
    expect(hasDuplicateKeys(json)).toBe(twice);
  });
});
