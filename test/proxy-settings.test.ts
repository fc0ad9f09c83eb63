import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { ModelsyncError } from '../src/errors.js';
import { NoProxy } from '../src/proxy/no-proxy.js';
import { proxyFor } from '../src/proxy/proxy-for.js';
import { readProxySettings } from '../src/proxy/proxy-settings.js';

/** NO_PROXY and the proxy variables, read the way curl reads them (issue 16, part 3). */

const bypass = (noProxy: string, url: string): boolean => NoProxy.parse(noProxy).matches(new URL(url));

describe('NO_PROXY', () => {
  it.each([
    // [NO_PROXY, URL, goes direct]
    ['*', 'https://huggingface.co/x', true],
    ['example.com', 'https://example.com/x', true],
    ['example.com', 'https://cdn.example.com/x', true],
    ['example.com', 'https://notexample.com/x', false],
    ['example.com', 'https://example.com.evil.org/x', false],
    ['.example.com', 'https://example.com/x', true],
    ['.example.com', 'https://a.b.example.com/x', true],
    ['*.example.com', 'https://a.example.com/x', true],
    ['EXAMPLE.com', 'https://Cdn.Example.COM/x', true],
    ['example.com.', 'https://example.com./x', true],
    ['example.com:8443', 'https://example.com:8443/x', true],
    ['example.com:8443', 'https://example.com/x', false],
    ['example.com:443', 'https://example.com/x', true],
    ['localhost, 127.0.0.1', 'http://127.0.0.1:9000/x', true],
    ['10.0.0.0/8', 'http://10.20.30.40/x', true],
    ['10.0.0.0/8', 'http://11.0.0.1/x', false],
    ['192.168.1.7', 'http://192.168.1.7:80/x', true],
    ['192.168.1.7:9000', 'http://192.168.1.7:80/x', false],
    ['fd00::/8', 'http://[fd12::1]/x', true],
    ['::1', 'http://[::1]:8080/x', true],
    ['[::1]:8080', 'http://[::1]:8080/x', true],
    ['[::1]:8080', 'http://[::1]:9090/x', false],
    // An IP entry never matches a name (nothing is resolved), and a name never an IP.
    ['127.0.0.1', 'http://localhost/x', false],
    ['localhost', 'http://127.0.0.1/x', false],
    ['  a.org ,, b.org  c.org ', 'https://x.c.org/', true],
    ['', 'https://example.com/x', false],
    ['10.0.0.0/33, nonsense/8', 'http://10.0.0.1/x', false],
  ])('NO_PROXY=%j, %s: direct %s', (noProxy, url, direct) => {
    expect(bypass(noProxy, url)).toBe(direct);
  });
});

describe('proxy variables', () => {
  it('lower case wins where both are set, and an empty lower-case one turns the proxy off', () => {
    const both = readProxySettings({ https_proxy: 'http://lower:3128', HTTPS_PROXY: 'http://upper:3128' }).settings;
    expect(both.https?.name).toBe('http://lower:3128');
    expect(both.https?.variable).toBe('https_proxy');
    expect(readProxySettings({ HTTPS_PROXY: 'http://upper:3128' }).settings.https?.variable).toBe('HTTPS_PROXY');
    expect(readProxySettings({ https_proxy: '', HTTPS_PROXY: 'http://upper:3128' }).settings.https).toBeUndefined();
    const np = readProxySettings({ HTTPS_PROXY: 'http://p:1', no_proxy: 'a.org', NO_PROXY: 'b.org' }).settings;
    expect(proxyFor(np, new URL('https://a.org/x'))).toBeUndefined();
    expect(proxyFor(np, new URL('https://b.org/x'))?.name).toBe('http://p:1');
  });

  it('HTTPS_PROXY serves https:// targets and HTTP_PROXY http:// ones; a bare host:port is an http proxy', () => {
    const s = readProxySettings({ HTTPS_PROXY: 'proxy.corp:3128', HTTP_PROXY: 'http://plain.corp:8080/' }).settings;
    expect(proxyFor(s, new URL('https://hf.co/x'))).toMatchObject({ protocol: 'http:', host: 'proxy.corp', port: 3128 });
    expect(proxyFor(s, new URL('http://mirror.local/x'))).toMatchObject({ host: 'plain.corp', port: 8080 });
    expect(readProxySettings({ HTTPS_PROXY: 'https://tls.corp' }).settings.https).toMatchObject({ protocol: 'https:', port: 443 });
    expect(readProxySettings({ HTTPS_PROXY: 'http://[fd00::5]:3128' }).settings.https).toMatchObject({ host: 'fd00::5', port: 3128, name: 'http://[fd00::5]:3128' });
  });

  it('credentials become Proxy-Authorization, and are listed as secrets but never named', () => {
    const r = readProxySettings({ HTTPS_PROXY: 'http://us%40er:p%3Ass@proxy.corp:3128' });
    const p = r.settings.https;
    expect(p?.name).toBe('http://proxy.corp:3128');
    expect(p?.authorization).toBe(`Basic ${Buffer.from('us@er:p:ss').toString('base64')}`);
    expect(r.secrets).toEqual(expect.arrayContaining(['p:ss', 'p%3Ass', p?.authorization]));
    expect(r.secretVars).toEqual(['HTTPS_PROXY']);
    expect(readProxySettings({ HTTPS_PROXY: 'http://proxy.corp:3128' }).secretVars).toEqual([]);
  });

  it.each(['socks5://proxy.corp:1080', 'http://', 'http://exa mple:80'])('refuses %s as bad usage, without echoing it', (value) => {
    try {
      readProxySettings({ HTTPS_PROXY: value.replace('proxy.corp', 'user:hunter22@proxy.corp') });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ModelsyncError);
      expect((e as ModelsyncError).code).toBe('E_USAGE');
      expect((e as Error).message).toContain('HTTPS_PROXY');
      expect((e as Error).message).not.toContain('hunter22');
    }
  });
});

describe('config: proxies', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-proxycfg-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a proxy URL with a password is kept from ComfyUI unless passed through; one without is handed on', () => {
    const base = { MODELSYNC_MODELS_DIR: dir, HOME: dir };
    const secret = loadConfig({}, { ...base, HTTPS_PROXY: 'http://u:hunter22@p:3128', http_proxy: 'http://p:3128', NO_PROXY: 'localhost' });
    expect(secret.childEnv.HTTPS_PROXY).toBeUndefined();
    expect(secret.childEnv.http_proxy).toBe('http://p:3128');
    expect(secret.childEnv.NO_PROXY).toBe('localhost');
    expect(secret.secrets).toContain('hunter22');
    const passed = loadConfig({}, { ...base, HTTPS_PROXY: 'http://u:hunter22@p:3128', MODELSYNC_CHILD_ENV_PASSTHROUGH: 'HTTPS_PROXY' });
    expect(passed.childEnv.HTTPS_PROXY).toBe('http://u:hunter22@p:3128');
  });
});
