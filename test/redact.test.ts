/** redactUrl and scrubSecrets (redact.ts): what of a URL or a secret may reach a log. */
import { describe, expect, it } from 'vitest';
import { redactUrl, scrubSecrets } from '../src/redact.js';

describe('redactUrl', () => {
  it('keeps origin and path, hides any query and any user info', () => {
    expect(redactUrl('https://cdn.example/a/b.safetensors?X-Amz-Signature=abc&X-Amz-Credential=AKIA')).toBe('https://cdn.example/a/b.safetensors?<redacted>');
    expect(redactUrl('https://user:pa55@host.example:8443/p')).toBe('https://<redacted>@host.example:8443/p');
    expect(redactUrl('https://:pa55@host.example/p')).toBe('https://<redacted>@host.example/p');
    expect(redactUrl(new URL('http://127.0.0.1:9/x?token=t#frag'))).toBe('http://127.0.0.1:9/x?<redacted>');
    expect(redactUrl('https://host.example/plain')).toBe('https://host.example/plain');
  });

  it('drops a fragment, and never echoes what it cannot parse', () => {
    expect(redactUrl('https://host.example/p#secret')).toBe('https://host.example/p');
    expect(redactUrl('not a url ?token=SECRET')).toBe('<unparseable url>');
  });
});

describe('scrubSecrets', () => {
  it('replaces every occurrence of every secret; shorter than 4 characters is not a secret to hunt for', () => {
    expect(scrubSecrets('a hf_SECRET b hf_SECRET c AWS123', ['hf_SECRET', 'AWS123', 'abc'])).toBe('a <redacted> b <redacted> c <redacted>');
    expect(scrubSecrets('a b c', ['a', ''])).toBe('a b c');
  });
});
