/**
 * The paths-info answer, read (issue 13, class 1): content ids become store file names, so only a
 * content id may come out, and only for a path that was asked about. Fixed cases, then a property
 * over arbitrary answers; the last fixed cases are the counter-examples fast-check shrank to
 * against the reading before issue 13 (which took any `oid` and any `path`).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readPathsInfo, type PathsInfoVerdict } from '../src/sources/hf-paths-info.js';

const SHA = 'a'.repeat(64);
const GIT = 'b'.repeat(40);
const lfsItem = (path: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ type: 'file', path, oid: GIT, size: 10, lfs: { oid: SHA, size: 10, pointerSize: 130 }, ...extra });
const plainItem = (path: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ type: 'file', path, oid: GIT, size: 10, ...extra });

function only(v: PathsInfoVerdict, p: string): unknown {
  return v.get(p);
}

describe('readPathsInfo', () => {
  it('reads an LFS file by its sha256 and a plain file by its git blob id', () => {
    const v = readPathsInfo([lfsItem('a.safetensors'), plainItem('c.json')], ['a.safetensors', 'c.json']);
    expect(only(v, 'a.safetensors')).toEqual({ file: { path: 'a.safetensors', size: 10, algo: 'sha256', hex: SHA } });
    expect(only(v, 'c.json')).toEqual({ file: { path: 'c.json', size: 10, algo: 'gitsha1', hex: GIT } });
  });

  it('a list with an item that is not an object is no answer: every asked path has a problem', () => {
    for (const bad of [null, 3, 'x', [lfsItem('a.safetensors')]]) {
      const v = readPathsInfo([lfsItem('a.safetensors'), bad], ['a.safetensors', 'c.json']);
      expect([...v.values()].map((x) => 'problem' in x && x.problem.startsWith('an item that is not an object'))).toEqual([true, true]);
    }
  });

  it('leaves out directories and paths nobody asked about', () => {
    const v = readPathsInfo([{ type: 'directory', path: 'd', oid: GIT, size: 0 }, plainItem('other.json')], ['d', 'c.json']);
    expect([...v.keys()]).toEqual([]);
  });

  it.each([
    ['an lfs.oid that is a path', lfsItem('a', { lfs: { oid: '../../etc/passwd', size: 10 } }), /lfs\.oid "\.\.\/\.\.\/etc\/passwd"/],
    ['an lfs.size that disagrees', lfsItem('a', { lfs: { oid: SHA, size: 11 } }), /lfs\.size 11, which disagrees with its size 10/],
    ['an lfs that is a string', lfsItem('a', { lfs: SHA }), /^lfs "a+", which is not an object/],
    ['a git oid with a slash', plainItem('a', { oid: `${'b'.repeat(39)}/` }), /^oid ".*", which is not a git blob id/],
    ['a fractional size', plainItem('a', { size: 1.5 }), /^size 1\.5,/],
    ['a size past 2^53', plainItem('a', { size: 2 ** 60 }), /^size 1152921504606847000,/],
    ['a size as a string', plainItem('a', { size: '10' }), /^size "10",/],
    ['an unknown type', plainItem('a', { type: 'symlink' }), /^type "symlink"/],
  ])('refuses %s, naming the value', (_what, item, why) => {
    const got = only(readPathsInfo([item], ['a']), 'a') as { problem?: string };
    expect(got.problem).toMatch(why);
  });

  it('escapes and cuts a long or unprintable value', () => {
    const got = only(readPathsInfo([plainItem('a', { oid: `\u202e${'x'.repeat(500)}\n` })], ['a']), 'a') as { problem: string };
    expect(got.problem).toContain('"\\u202exxx');
    expect(got.problem).toContain('(510 characters)');
    expect(got.problem.length).toBeLessThan(200);
  });

  it('refuses a path answered twice with different content, takes it answered twice the same', () => {
    expect(only(readPathsInfo([plainItem('a'), plainItem('a', { oid: 'c'.repeat(40) })], ['a']), 'a')).toEqual({ problem: 'two different answers for the same path' });
    expect(only(readPathsInfo([plainItem('a'), plainItem('a')], ['a']), 'a')).toMatchObject({ file: { hex: GIT } });
  });

  it('refuses every asked path when the answer is not a list', () => {
    const v = readPathsInfo({ a: 1 }, ['a', 'b']);
    expect([...v.values()].map((x) => 'problem' in x)).toEqual([true, true]);
  });
});

const KEYS = ['type', 'path', 'oid', 'size', 'lfs'] as const;
const asked = ['a.safetensors', 'b/c.json', '../x'];
/** Items shaped like paths-info items, with any JSON in any field (and sometimes not objects at all). */
const item = fc.oneof(
  { weight: 5, arbitrary: fc.record({ type: fc.oneof(fc.constantFrom('file', 'directory'), fc.jsonValue()), path: fc.oneof(fc.constantFrom(...asked), fc.string()), oid: fc.oneof(fc.constant(GIT), fc.string(), fc.jsonValue()), size: fc.oneof(fc.nat(), fc.double(), fc.jsonValue()), lfs: fc.oneof(fc.constant(undefined), fc.record({ oid: fc.oneof(fc.constant(SHA), fc.string(), fc.jsonValue()), size: fc.oneof(fc.nat(), fc.jsonValue()) }), fc.jsonValue()) }, { requiredKeys: [...KEYS].filter((k) => k !== 'lfs') }) },
  { weight: 1, arbitrary: fc.jsonValue() },
);

describe('readPathsInfo (property)', () => {
  it('out of any answer, only content ids of asked paths, with byte counts; never a throw', () => {
    fc.assert(
      fc.property(fc.oneof(fc.array(item, { maxLength: 6 }), fc.jsonValue()), (answer) => {
        const v = readPathsInfo(answer, asked);
        for (const [p, r] of v) {
          expect(asked).toContain(p);
          if ('problem' in r) continue;
          expect(r.file.path).toBe(p);
          expect(r.file.hex).toMatch(r.file.algo === 'sha256' ? /^[0-9a-f]{64}$/ : /^[0-9a-f]{40}$/);
          expect(Number.isSafeInteger(r.file.size) && r.file.size >= 0).toBe(true);
        }
      }),
      { numRuns: 20_000, seed: 13 },
    );
  });

  // Shrunk counter-examples of the reading before issue 13 (it took any oid, and threw on non-lists).
  it.each([
    [[{ type: 'file', path: 'a.safetensors', oid: '', size: 0 }]],
    [false],
    [null],
    [[{ type: 'file', path: '../x', oid: GIT, size: 0 }, { type: 'file', path: 'elsewhere.json', oid: GIT, size: 0 }]],
  ])('regression: %j', (answer) => {
    const v = readPathsInfo(answer, asked);
    expect([...v.keys()].every((p) => asked.includes(p))).toBe(true);
    for (const r of v.values()) if ('file' in r) expect(r.file.hex).toMatch(/^[0-9a-f]{40}$/);
    expect(v.get('a.safetensors') ?? {}).not.toHaveProperty('file');
  });

  it('a truthful answer reads back exactly', () => {
    const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });
    fc.assert(
      fc.property(fc.uniqueArray(fc.string({ minLength: 1 }), { minLength: 1, maxLength: 5 }), fc.array(fc.tuple(fc.boolean(), hex(64), hex(40), fc.nat()), { minLength: 5, maxLength: 5 }), (paths, facts) => {
        const answer = paths.map((p, i) => {
          const [lfs, sha, git, size] = facts[i] ?? [false, SHA, GIT, 0];
          return { type: 'file', path: p, oid: git, size, ...(lfs ? { lfs: { oid: sha, size, pointerSize: 130 } } : {}) };
        });
        const v = readPathsInfo(answer, paths);
        paths.forEach((p, i) => {
          const [lfs, sha, git, size] = facts[i] ?? [false, SHA, GIT, 0];
          expect(v.get(p)).toEqual({ file: { path: p, size, algo: lfs ? 'sha256' : 'gitsha1', hex: lfs ? sha : git } });
        });
      }),
      { numRuns: 2000, seed: 13 },
    );
  });
});
