import { describe, expect, it } from 'vitest';
import { ModelsyncError } from '../../src/errors.js';
import { globMatches, isInternalHost, normaliseGlob } from '../../src/manifest/glob.js';
import { ManifestError } from '../../src/manifest/manifest-error.js';
import { parseManifest } from '../../src/manifest/load.js';
import type { Manifest } from '../../src/manifest/types.js';
import { normaliseRequests, type Normalised } from '../../src/ondemand/normalise.js';

const H = 'a'.repeat(64);
const HF_ENDPOINT = 'https://huggingface.co';

function manifest(onDemand: string, models = '[]', extra = ''): Manifest {
  return parseManifest(`version: 1\nmodels: ${models}\n${extra}${onDemand}`, 'm.yaml');
}

const OPEN = manifest('on_demand:\n  allow: ["hf://*", "https://civitai.com/*", "s3://team-models/loras/*", "http://127.0.0.1:9/*"]\n  max_bytes: 10G\n');

function glob(g: string): string {
  const n = normaliseGlob(g);
  if ('error' in n) throw new Error(n.error);
  return n.glob;
}

function refused(requests: unknown[], m: Manifest = OPEN, endpoint = HF_ENDPOINT): ModelsyncError {
  try {
    normaliseRequests(requests, { manifest: m, hfEndpoint: endpoint });
  } catch (e) {
    if (e instanceof ModelsyncError) return e;
    throw e;
  }
  throw new Error(`not refused: ${JSON.stringify(requests).slice(0, 200)}`);
}

function accepted(requests: unknown[], m: Manifest = OPEN, endpoint = HF_ENDPOINT): Normalised[] {
  return normaliseRequests(requests, { manifest: m, hfEndpoint: endpoint });
}

describe('on_demand policy in the manifest', () => {
  it('parses allow, max_bytes with units, require_sha256', () => {
    const m = manifest('on_demand:\n  allow: ["hf://org/*", "https://Example.COM:443/models/*"]\n  max_bytes: 200G\n  require_sha256: true\n');
    expect(m.onDemand).toEqual({ allow: ['hf://org/*', 'https://example.com/models/*'], maxBytes: 200 * 2 ** 30, requireSha256: true });
    expect(manifest('on_demand:\n  allow: []\n  max_bytes: 1048576\n').onDemand).toMatchObject({ maxBytes: 1048576, requireSha256: false });
    expect(manifest('on_demand:\n  allow: []\n  max_bytes: 1.5TiB\n').onDemand?.maxBytes).toBe(1.5 * 2 ** 40);
    expect(parseManifest('version: 1\nmodels: []\n', 'm.yaml').onDemand).toBeUndefined();
  });

  it('lists every bad glob and size with its field and line', () => {
    let err: unknown;
    try {
      manifest('on_demand:\n  allow:\n    - "ftp://x/*"\n    - "https://example.com"\n    - "https://ex ample.com/*"\n    - "https://*.Example.com/*"\n    - "https://example.com/a?b=*"\n    - "https://example.com/ü/*"\n  max_bytes: lots\n  extra: 1\n');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ManifestError);
    const fields = (err as ManifestError).problems.map((p) => p.field);
    expect(fields).toEqual(['on_demand.extra']);
    try {
      manifest('on_demand:\n  allow:\n    - "ftp://x/*"\n    - "https://example.com"\n    - "https://ex ample.com/*"\n    - "https://*.Example.com/*"\n    - "https://example.com/a?b=*"\n    - "https://example.com/ü/*"\n    - "hf://"\n  max_bytes: lots\n');
    } catch (e) {
      err = e;
    }
    const ps = (err as ManifestError).problems;
    expect(ps.map((p) => p.field)).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => `on_demand.allow.${i}`).concat('on_demand.max_bytes'));
    expect(ps[0]?.line).toBe(5);
    expect(ps.at(-1)?.line).toBe(12);
    expect((err as ManifestError).code).toBe('E_MANIFEST');
  });

  it('refuses a max_bytes of zero, negative or not an integer', () => {
    for (const v of ['0', '-5', '1.5', '"0G"', '"G"']) expect(() => manifest(`on_demand:\n  allow: []\n  max_bytes: ${v}\n`), v).toThrow(ManifestError);
  });
});

describe('glob matching', () => {
  it('* crosses / in hf and s3 globs and in URL paths', () => {
    expect(globMatches(glob('hf://*'), 'hf://org/name@main/a/b.safetensors')).toBe(true);
    expect(globMatches(glob('s3://team-models/loras/*'), 's3://team-models/loras/sub/x.safetensors')).toBe(true);
    expect(globMatches(glob('s3://team-models/loras/*'), 's3://team-models/other/x.safetensors')).toBe(false);
    expect(globMatches(glob('https://civitai.com/*'), 'https://civitai.com/api/download/models/1')).toBe(true);
    expect(globMatches(glob('https://example.com/m/*.safetensors'), 'https://example.com/m/a/b.safetensors')).toBe(true);
    expect(globMatches(glob('hf://org/name@main/*'), 'hf://org/name@dev/x')).toBe(false);
  });

  it('a glob matches the whole URI, not a prefix or a suffix', () => {
    expect(globMatches(glob('https://civitai.com/api/*'), 'https://civitai.com/api')).toBe(false);
    expect(globMatches(glob('hf://org/*'), 'hf://org-evil/x@main/y')).toBe(false);
    expect(globMatches(glob('hf://org/name@main/a.safetensors'), 'hf://org/name@main/a.safetensors.bak')).toBe(false);
    expect(globMatches(glob('hf://org/name@main/a.safetensors'), 'xhf://org/name@main/a.safetensors')).toBe(false);
  });

  it('* in a host never reaches the path, another host, or this machine', () => {
    const g = glob('https://*.example.com/*');
    expect(globMatches(g, 'https://cdn.example.com/x')).toBe(true);
    expect(globMatches(g, 'https://a.b.example.com/x')).toBe(true);
    expect(globMatches(g, 'https://evil.test/.example.com/x')).toBe(false);
    expect(globMatches(g, 'https://example.com.evil.test/x')).toBe(false);
    const any = glob('https://*/*');
    expect(globMatches(any, 'https://models.example.org/x')).toBe(true);
    for (const host of ['127.0.0.1', '127.1.2.3:8188', 'localhost', 'x.localhost', '10.0.0.8', '192.168.1.1', '172.16.0.1', '169.254.169.254', '[::1]', '[fe80::1]', '[fd00::2]', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '0.0.0.0']) {
      expect(globMatches(any, `https://${host}/x`), host).toBe(false);
    }
    expect(globMatches(glob('http://127.0.0.1:9/*'), 'http://127.0.0.1:9/x')).toBe(true);
  });

  it('is case-sensitive except in a literal host, which is normalised as a URL host is', () => {
    expect(globMatches(glob('hf://stabilityai/*'), 'hf://StabilityAI/sdxl@main/x')).toBe(false);
    expect(globMatches(glob('https://EXAMPLE.com/Models/*'), 'https://example.com/Models/x')).toBe(true);
    expect(globMatches(glob('https://example.com/Models/*'), 'https://example.com/models/x')).toBe(false);
    expect(glob('https://bücher.example/*')).toBe('https://xn--bcher-kva.example/*');
  });

  it('takes linear time on a hostile URI against a glob of many stars', () => {
    const g = glob(`hf://${'a*'.repeat(30)}b`);
    expect(globMatches(g, `hf://${'a'.repeat(4000)}`)).toBe(false);
  });

  it('knows internal hosts', () => {
    expect(isInternalHost('100.64.0.1')).toBe(true);
    expect(isInternalHost('8.8.8.8')).toBe(false);
    expect(isInternalHost('[2001:db8::1]')).toBe(false);
    expect(isInternalHost('example.com:8443')).toBe(false);
  });
});

describe('on-demand requests, normalised and checked', () => {
  it('reads a Hub resolve URL as the hf:// file it names (huggingface.co, hf.co, HF_ENDPOINT)', () => {
    const [a, b, c] = accepted([
      { name: 'a.safetensors', url: 'https://huggingface.co/org/name/resolve/main/sub/a.safetensors?download=true', directory: 'loras' },
      { name: 'b.safetensors', url: 'https://hf.co/datasets/org/ds/resolve/refs%2Fpr%2F1/b.safetensors', directory: 'loras' },
      { source: 'http://127.0.0.1:9/hub/org/name/resolve/v1/c.safetensors', dest: 'vae/c.safetensors' },
    ], OPEN, 'http://127.0.0.1:9/hub');
    expect(a?.uri).toBe('hf://org/name@main/sub/a.safetensors');
    expect(a?.entry).toMatchObject({ dest: 'loras/a.safetensors', source: { kind: 'hf', repo: 'org/name', revision: 'main', path: 'sub/a.safetensors' } });
    expect(a?.tofu).toBe(false);
    expect(b?.uri).toBe('hf://datasets/org/ds@refs%2Fpr%2F1/b.safetensors');
    expect(c?.uri).toBe('hf://org/name@v1/c.safetensors');
  });

  it('an hf:// source without a revision is matched with @main', () => {
    const m = manifest('on_demand:\n  allow: ["hf://org/name@main/*"]\n  max_bytes: 1G\n');
    expect(accepted([{ source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors' }], m)[0]?.uri).toBe('hf://org/name@main/x.safetensors');
  });

  it('refuses everything, naming the policy, when the manifest has no on_demand key', () => {
    const off = parseManifest('version: 1\nmodels: []\n', 'm.yaml');
    const e = refused([{ source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors' }], off);
    expect(e.code).toBe('E_POLICY');
    expect(e.message).toContain('on_demand');
    expect(e.exitCode).toBe(2);
  });

  it('refuses what no glob allows, with the index and dest of the request', () => {
    const e = refused([{ source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors' }, { source: 'https://example.org/y.safetensors', dest: 'loras/y.safetensors', sha256: H }]);
    expect(e).toMatchObject({ code: 'E_POLICY', entry: 1, dest: 'loras/y.safetensors' });
    expect(e.message).toContain('on_demand.allow');
  });

  it('refuses what the manifest path refuses, with the manifest codes', () => {
    const cases: [unknown, string][] = [
      [{ source: 'hf://org/name/x.safetensors', dest: '../x.safetensors' }, 'E_MANIFEST'],
      [{ source: 'hf://org/name/x.safetensors', dest: '/etc/passwd' }, 'E_MANIFEST'],
      [{ source: 'hf://org/name/x.safetensors', dest: 'nosuch/x.safetensors' }, 'E_MANIFEST'],
      [{ source: 'hf://org/name/x.ckpt', dest: 'checkpoints/x.ckpt' }, 'E_MANIFEST'],
      [{ name: 'x.pt', url: 'https://huggingface.co/org/name/resolve/main/x.pt', directory: 'loras' }, 'E_MANIFEST'],
      [{ source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors', sha256: 'abc' }, 'E_MANIFEST'],
      [{ source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors', required: true }, 'E_MANIFEST'],
      [{ source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors', evil: 1 }, 'E_MANIFEST'],
      [{ source: 'hf://org/name/x.safetensors', dest: 7 }, 'E_MANIFEST'],
      [{ source: ['hf://org/name/x'], dest: 'loras/x' }, 'E_MANIFEST'],
      [{ name: 'x.safetensors', url: 'https://huggingface.co/org/name/resolve/main/x.safetensors', directory: 'loras', hash: 'zz', hash_type: 'SHA256' }, 'E_MANIFEST'],
      [{ name: 'x.safetensors', url: 'https://huggingface.co/org/name/resolve/main/x.safetensors', directory: 'loras', extra: true }, 'E_MANIFEST'],
      [{ name: '../../x.safetensors', url: 'https://huggingface.co/org/name/resolve/main/x.safetensors', directory: 'loras' }, 'E_MANIFEST'],
      [{ name: 'x.safetensors', url: 'ftp://example.org/x', directory: 'loras' }, 'E_MANIFEST'],
      [null, 'E_MANIFEST'],
      [[1, 2], 'E_MANIFEST'],
      ['hf://org/name/x', 'E_MANIFEST'],
    ];
    for (const [req, code] of cases) expect(refused([req]).code, JSON.stringify(req)).toBe(code);
  });

  it('refuses two requests for one dest with different content, and a manifest dest with other content', () => {
    const e = refused([
      { source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors' },
      { source: 'hf://org/name/y.safetensors', dest: 'loras/x.safetensors' },
    ]);
    expect(e).toMatchObject({ code: 'E_MANIFEST', entry: 1, dest: 'loras/x.safetensors' });
    const withEntry = manifest('on_demand:\n  allow: ["hf://*"]\n  max_bytes: 1G\n', '[{source: "hf://org/name/base.safetensors", dest: "checkpoints/base.safetensors"}]');
    expect(refused([{ source: 'hf://org/other/base.safetensors', dest: 'checkpoints/base.safetensors' }], withEntry).code).toBe('E_MANIFEST');
    const same = accepted([{ source: 'hf://org/name@main/base.safetensors', dest: 'checkpoints/base.safetensors' }], withEntry);
    expect(same[0]?.manifestDest).toBe(true);
  });

  it('the same dest twice with the same content is one request, not a refusal', () => {
    expect(accepted([
      { source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors' },
      { name: 'x.safetensors', url: 'hf://org/name/x.safetensors', directory: 'loras' },
    ])).toHaveLength(2);
  });

  it('refuses an empty request and one of thousands of entries before looking at any', () => {
    expect(refused([]).code).toBe('E_USAGE');
    const many = Array.from({ length: 5000 }, (_, i) => ({ source: 'hf://org/name/x.safetensors', dest: `loras/${i}.safetensors` }));
    expect(refused(many).code).toBe('E_USAGE');
  });

  it('hostile Hub URLs: encodings, "..", userinfo, broken escapes, other ports and schemes', () => {
    const hub = (url: string): unknown => ({ name: 'x.safetensors', url, directory: 'loras' });
    // Each is refused outright, never read as some other Hub file.
    for (const url of [
      'https://huggingface.co/org/name/resolve/main/..%2F..%2Fsecret.safetensors',
      'https://huggingface.co/org/name/resolve/main/a%2Fb.safetensors',
      'https://huggingface.co/org%2Fother/name/resolve/main/x.safetensors',
      'https://huggingface.co/org/name/resolve/main/%2e%2e/x.safetensors',
      'https://huggingface.co/org/name/resolve/main/bad%zz.safetensors',
      'https://user:pass@huggingface.co/org/name/resolve/main/x.safetensors',
      'https://huggingface.co/org/name',
      'https://huggingface.co/spaces/org/app/resolve/main/x.safetensors',
    ]) {
      expect(refused([hub(url)]).code, url).toBe('E_MANIFEST');
    }
    // "/./" and "/../" are resolved by the URL parser before anything looks at the path.
    expect(accepted([hub('https://huggingface.co/org/name/resolve/main/a/../x.safetensors')])[0]?.uri).toBe('hf://org/name@main/x.safetensors');
    // Not the Hub: a look-alike host, another port, plain http: plain URLs, which "hf://*" does not allow.
    for (const url of ['https://huggingface.co.evil.test/org/name/resolve/main/x.safetensors', 'https://huggingface.co:8443/org/name/resolve/main/x.safetensors', 'https://hugging\u0444ace.co/org/name/resolve/main/x.safetensors']) {
      expect(refused([{ ...(hub(url) as object), hash: H, hash_type: 'sha256' }]).code, url).toBe('E_POLICY');
    }
    expect(refused([hub('http://huggingface.co/org/name/resolve/main/x.safetensors')]).code).toBe('E_MANIFEST');
  });

  it('hostile URLs against an https glob: userinfo, encoded separators, loopback, unicode hosts, case', () => {
    const m = manifest('on_demand:\n  allow: ["https://models.example.org/public/*", "https://*.cdn.example.org/*"]\n  max_bytes: 1G\n');
    const req = (source: string): unknown => ({ source, dest: 'loras/x.safetensors', sha256: H });
    expect(accepted([req('https://models.example.org/public/a/x.safetensors')], m)).toHaveLength(1);
    expect(accepted([req('https://MODELS.example.org:443/public/x.safetensors?sig=1')], m)[0]?.uri).toBe('https://models.example.org/public/x.safetensors');
    for (const [source, code] of [
      ['https://models.example.org/public/..%2Fprivate/x.safetensors', 'E_POLICY'],
      ['https://models.example.org/public/..%5Cprivate/x.safetensors', 'E_POLICY'],
      ['https://models.example.org/public/../private/x.safetensors', 'E_POLICY'],
      ['https://models.example.org/public/%2e%2e/private/x.safetensors', 'E_POLICY'],
      ['https://models.example.org/Public/x.safetensors', 'E_POLICY'],
      ['https://user@models.example.org/public/x.safetensors', 'E_MANIFEST'],
      ['https://models.example.org@evil.test/public/x.safetensors', 'E_MANIFEST'],
      ['https://evil.test/public/x.safetensors#@models.example.org/public/', 'E_POLICY'],
      ['https://models.example.org.evil.test/public/x.safetensors', 'E_POLICY'],
      ['https://models.examp\u04cfe.org/public/x.safetensors', 'E_POLICY'],
      ['https://127.0.0.1.cdn.example.org.evil.test/x.safetensors', 'E_POLICY'],
      ['https://evil.test/.cdn.example.org/x.safetensors', 'E_POLICY'],
      ['http://models.example.org/public/x.safetensors', 'E_MANIFEST'],
    ] as const) {
      expect(refused([req(source)], m).code, source).toBe(code);
    }
    expect(accepted([req('https://eu.cdn.example.org/x.safetensors')], m)).toHaveLength(1);
    const any = manifest('on_demand:\n  allow: ["https://*/*", "http://*/*"]\n  max_bytes: 1G\n');
    for (const source of ['https://127.0.0.1/x.safetensors', 'https://2130706433/x.safetensors', 'https://0x7f.1/x.safetensors', 'https://localhost/x.safetensors', 'https://[::1]/x.safetensors', 'http://127.0.0.1:8188/view?filename=x', 'https://169.254.169.254/latest/meta-data']) {
      expect(refused([req(source)], any).code, source).toBe('E_POLICY');
    }
  });

  it('hostile S3 keys: "." and ".." segments, empty segments, control characters', () => {
    for (const key of ['loras/../secret/x.safetensors', 'loras/./x.safetensors', 'loras//x.safetensors', 'loras/x\u0007.safetensors']) {
      expect(refused([{ source: `s3://team-models/${key}`, dest: 'loras/x.safetensors', sha256: H }]).code, key).toBe('E_POLICY');
    }
    expect(accepted([{ source: 's3://team-models/loras/key with spaces/ü.safetensors', dest: 'loras/x.safetensors', sha256: H }])).toHaveLength(1);
  });

  it('https and s3 without a sha256: trust on first use, or refused under require_sha256', () => {
    const [n] = accepted([{ source: 's3://team-models/loras/x.safetensors', dest: 'loras/x.safetensors' }]);
    expect(n?.tofu).toBe(true);
    const strict = manifest('on_demand:\n  allow: ["s3://team-models/*", "hf://*"]\n  max_bytes: 1G\n  require_sha256: true\n');
    const e = refused([{ source: 's3://team-models/loras/x.safetensors', dest: 'loras/x.safetensors' }], strict);
    expect(e.code).toBe('E_POLICY');
    expect(e.message).toContain('require_sha256');
    expect(accepted([{ source: 'hf://org/name/x.safetensors', dest: 'loras/x.safetensors' }], strict)[0]?.tofu).toBe(false);
    // A workflow hash of another kind is no sha256.
    const [w] = accepted([{ name: 'x.safetensors', url: 'https://civitai.com/files/x.safetensors', directory: 'loras', hash: 'ABCD1234', hash_type: 'AutoV2' }]);
    expect(w?.tofu).toBe(true);
    const [s] = accepted([{ name: 'x.safetensors', url: 'https://civitai.com/files/x.safetensors', directory: 'loras', hash: H.toUpperCase(), hash_type: 'SHA256' }]);
    expect(s?.entry.sha256).toBe(H);
  });

  it('bounds what it quotes from a request', () => {
    const e = refused([{ source: 'hf://org/name/x.safetensors', dest: `nosuch/${'x'.repeat(5000)}` }]);
    expect(e.message.length).toBeLessThan(1000);
    expect(refused([{ source: `hf://org/name/${'x'.repeat(5000)}`, dest: 'loras/x.safetensors' }]).code).toBe('E_MANIFEST');
  });
});
