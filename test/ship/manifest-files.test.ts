import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { manifestFiles, manifestProblems } from './ship-helpers.js';

// The example manifests checked as plain files, independently of src/ (manifests.test.ts runs
// them through the product's loader): syntax, the manifest v1 rules and the examples' own rules.
describe('example manifest files', () => {
  const files = manifestFiles();

  it('cover the promised workflows', () => {
    const names = files.map((f) => path.basename(f));
    expect(names).toEqual(expect.arrayContaining(['sdxl.yaml', 'flux1-schnell.yaml', 'sd15-controlnet.yaml', 'wan-video.yaml']));
  });

  for (const file of files) {
    const name = path.basename(file);
    const text = readFileSync(file, 'utf8');

    it(`${name} starts with a comment saying what it is for`, () => {
      const lines = text.split('\n');
      const firstCode = lines.findIndex((l) => !l.startsWith('#'));
      const header = lines.slice(0, firstCode < 0 ? lines.length : firstCode);
      expect(header.length, 'leading comment block').toBeGreaterThanOrEqual(3);
      expect(header.join('\n')).toMatch(/workflow|template/i);
    });

    it(`${name} is a valid manifest v1`, () => {
      const doc = parseDocument(text, { uniqueKeys: true });
      expect(doc.errors.map((e) => e.message)).toEqual([]);
      expect(manifestProblems(doc.toJS())).toEqual([]);
    });
  }
});
