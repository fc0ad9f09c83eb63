/**
 * Property test of the dest / folders validator (issue 13, class 2): whatever it accepts stays
 * strictly inside the models dir, on POSIX and on Windows readings of the path, and never reaches
 * a dot name (the store, publish temps). Random unicode segments, biased towards the characters
 * that make paths dangerous. The fixed cases below are counter-examples fast-check shrank to
 * against the validator before it reserved dot names: they stay as regression cases.
 */
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { COMFY_FOLDERS, destProblem } from '../src/manifest/dest.js';
import { ManifestSchema } from '../src/manifest/schema.js';

const MODELS = '/m';
const WIN_MODELS = 'C:\\m';

const tricky = fc.constantFrom('.', '..', '', '.modelsync-store', '...', '. ', '.. ', ' ..', 'C:', 'c:x', '\\', '..\\x', '\0', '\u2024', '\uff0f', '\u202e', '~', 'con', 'checkpoints', 'loras', 'vae');
const segment = fc.oneof(tricky, fc.string({ unit: 'binary', maxLength: 12 }), fc.string({ unit: fc.constantFrom('.', '/', '\\', ' ', 'a', ':'), maxLength: 6 }));
const dest = fc.oneof(
  fc.array(segment, { minLength: 1, maxLength: 5 }).map((s) => s.join('/')),
  fc.string({ unit: 'binary', maxLength: 40 }),
);
const folder = fc.oneof(tricky, fc.string({ unit: fc.constantFrom('.', 'a', '-', '_', 'Z', '0'), maxLength: 6 }), fc.string({ unit: 'binary', maxLength: 8 }));
/** `folders:` lists as the schema lets them through. */
const folders = fc.array(folder, { maxLength: 4 }).filter((f) => ManifestSchema.shape.folders.safeParse(f).success);

/** What an accepted dest must never do. Returns the broken promise, or undefined. */
function broken(d: string, extra: readonly string[]): string | undefined {
  const segs = d.split('/');
  if (segs.some((s) => s.startsWith('.'))) return 'reaches a dot name';
  const posix = path.posix.resolve(MODELS, d);
  if (!posix.startsWith(`${MODELS}/`)) return `leaves the models dir (${posix})`;
  if (path.posix.relative(MODELS, posix) !== d) return 'is not already normal';
  const win = path.win32.resolve(WIN_MODELS, d);
  if (!win.startsWith(`${WIN_MODELS}\\`)) return `leaves the models dir on Windows (${win})`;
  // Windows drops trailing dots and spaces of a name: ".. " is "..".
  if (win.split('\\').some((s) => /^\.+$/.test(s.replace(/[. ]+$/, '') || '.'))) return 'has a dot segment on Windows';
  const top = segs[0] ?? '';
  if (!COMFY_FOLDERS.includes(top) && !extra.includes(top)) return 'has an unknown top folder';
  return undefined;
}

describe('dest validator (property)', () => {
  it('never accepts a dest that escapes the models dir or reaches a dot name', () => {
    fc.assert(
      fc.property(dest, folders, (d, f) => {
        if (destProblem(d, f) !== undefined) return;
        expect(broken(d, f)).toBeUndefined();
      }),
      { numRuns: 20_000, seed: 13 },
    );
  });

  it('accepts what is plainly fine', () => {
    fc.assert(
      fc.property(fc.constantFrom(...COMFY_FOLDERS), fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9_. -]{0,30}$/), (top, name) => {
        expect(destProblem(`${top}/${name}`, [])).toBeUndefined();
      }),
    );
  });

  it('never lets a folders: entry start with a dot', () => {
    fc.assert(
      fc.property(folders, (f) => {
        expect(f.filter((x) => x.startsWith('.') || x === '')).toEqual([]);
      }),
      { numRuns: 5000 },
    );
  });

  // Counter-examples fast-check shrank to against the validator as it was before issue 13
  // (dot names allowed in dests and folders), and against its first fix (a name of spaces).
  it.each([
    ['loras/.../0', []],
    ['checkpoints/.modelsync-store', []],
    ['vae/ ', []],
    ['checkpoints/ ', []],
    ['checkpoints/ ../x', []],
    ['.modelsync-store/blobs', ['.modelsync-store']],
  ] as const)('regression: %j with folders %j is refused', (d, f) => {
    expect(destProblem(d, f)).toBeDefined();
  });

  it.each([['.'], ['..'], ['.modelsync-store']])('regression: folders: [%j] is refused', (f) => {
    expect(ManifestSchema.shape.folders.safeParse([f]).success).toBe(false);
  });
});
