/**
 * hostile-world.md, the network: TLS. A certificate nobody vouches for fails closed, naming the
 * host and carrying no secret; with the certificate trusted (NODE_EXTRA_CA_CERTS, read by Node
 * itself), a redirect from https down to http is still refused. Certificates are made at test
 * time with the openssl CLI.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_SOURCE_TOKEN, leakedSecrets, runCli, sandbox, type Sandbox } from '../support/cli.js';
import { startByteServer, type ByteServer } from '../support/byte-server.js';
import { makeSafetensors } from '../support/hub.js';
import { exists, fileSha256, sha256 } from '../support/models.js';
import { makeSelfSignedCert, type TestCert } from '../support/tls-cert.js';

const certDir = await mkdtemp(path.join(os.tmpdir(), 'modelsync-tls-'));
const cert = makeSelfSignedCert(certDir, '127.0.0.1');
/** Valid, trusted, but for another address than the one we connect to. */
const otherCert = makeSelfSignedCert(await mkdtemp(path.join(certDir, 'other-')), '127.0.0.2');
if (!cert || !otherCert) console.warn('tls.test: openssl is not available; TLS cases skipped');

const model = makeSafetensors(100_000, 55);
let secure: ByteServer;
let misnamed: ByteServer;
let plain: ByteServer;
let sb: Sandbox;

beforeAll(async () => {
  if (!cert || !otherCert) return;
  plain = await startByteServer({ host: '127.0.0.2', files: { '/m.safetensors': model } });
  secure = await startByteServer({
    tls: cert,
    files: { '/m.safetensors': model },
    redirects: { '/down': `${plain.url}/m.safetensors` },
  });
  misnamed = await startByteServer({ tls: otherCert, files: { '/m.safetensors': model } });
});
afterAll(async () => {
  await Promise.all([secure?.close(), misnamed?.close(), plain?.close()]);
  await rm(certDir, { recursive: true, force: true });
});
afterEach(async () => {
  await sb?.cleanup();
});

const entry = (url: string): Record<string, unknown> => ({ source: url, dest: 'checkpoints/t.safetensors', sha256: sha256(model), size: model.length });

function envFor(extra: Record<string, string> = {}): Record<string, string> {
  return sb.env({ MODELSYNC_HTTP_TOKENS: `127.0.0.1=${FAKE_SOURCE_TOKEN}`, ...extra });
}

describe.skipIf(!cert || !otherCert)('TLS (hostile-world.md, the network)', () => {
  it('an untrusted (self-signed) certificate fails closed at once, naming the host, with no secret', async () => {
    sb = await sandbox();
    await sb.writeManifest([entry(`${secure.url}/m.safetensors`)]);
    const before = secure.tlsFailures;
    const r = await runCli(['sync'], envFor());
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`TLS certificate rejected for 127\\.0\\.0\\.1:${secure.port} \\((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)\\)`));
    expect(secure.requests).toEqual([]);
    // Permanent, not retried: one handshake.
    expect(secure.tlsFailures - before).toBe(1);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
    expect(await exists(path.join(sb.models, 'checkpoints/t.safetensors'))).toBe(false);
  });

  it('a trusted certificate for another name fails closed too', async () => {
    sb = await sandbox();
    await sb.writeManifest([entry(`${misnamed.url}/m.safetensors`)]);
    const r = await runCli(['sync'], envFor({ NODE_EXTRA_CA_CERTS: (otherCert as TestCert).certPath }));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/TLS certificate rejected for 127\.0\.0\.1:\d+ \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
    expect(misnamed.requests).toEqual([]);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  });

  it('trusted through NODE_EXTRA_CA_CERTS it downloads; a redirect from https to http is refused', async () => {
    sb = await sandbox();
    await sb.writeManifest([entry(`${secure.url}/m.safetensors`)]);
    const trusted = envFor({ NODE_EXTRA_CA_CERTS: (cert as TestCert).certPath });
    const ok = await runCli(['sync'], trusted);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(await fileSha256(path.join(sb.models, 'checkpoints/t.safetensors'))).toBe(sha256(model));
    expect(secure.requests.every((q) => q.authorization === `Bearer ${FAKE_SOURCE_TOKEN}`)).toBe(true);

    await sb.cleanup();
    sb = await sandbox();
    await sb.writeManifest([entry(`${secure.url}/down`)]);
    const r = await runCli(['sync', '--json'], envFor({ NODE_EXTRA_CA_CERTS: (cert as TestCert).certPath }));
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const report = JSON.parse(r.stdout) as { entries: { error?: { code: string; message: string } }[] };
    expect(report.entries[0]?.error?.code).toBe('E_INSECURE_REDIRECT');
    expect(report.entries[0]?.error?.message).toMatch(/refused redirect from https to http:/);
    expect(plain.requests).toEqual([]);
    expect(leakedSecrets(r.stdout, r.stderr)).toEqual([]);
  });
});
