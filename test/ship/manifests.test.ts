import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readManifestFiles } from '../../src/manifest/files.js';
import { validateManifest } from '../../src/manifest/validate.js';
import { COMFY_MODEL_FOLDERS, isRecord, manifestFiles } from './ship-helpers.js';

/** The loaded manifest's entries, whatever the loader names the list. */
function loadedEntries(manifest: unknown): unknown[] {
  if (isRecord(manifest)) {
    if (Array.isArray(manifest.entries)) return manifest.entries;
    if (Array.isArray(manifest.models)) return manifest.models;
  }
  throw new Error(`validateManifest returned no entry list: ${JSON.stringify(manifest)}`);
}

describe('example manifests load with the product loader', () => {
  const files = manifestFiles();

  it('there are example manifests', () => {
    expect(files.length).toBeGreaterThanOrEqual(4);
  });

  for (const file of files) {
    it(`${path.basename(file)} is valid, non-empty, and publishes only into ComfyUI folders`, async () => {
      const manifest = validateManifest(await readManifestFiles(file));
      const entries = loadedEntries(manifest);
      expect(entries.length).toBeGreaterThan(0);
      for (const entry of entries) {
        const dest = isRecord(entry) ? entry.dest : undefined;
        expect(typeof dest, `entry without a dest: ${JSON.stringify(entry)}`).toBe('string');
        const top = String(dest).split('/')[0] ?? '';
        expect(COMFY_MODEL_FOLDERS, `${String(dest)}`).toContain(top);
      }
    });
  }
});
