/**
 * A self-signed certificate for 127.0.0.1, made at test time with the openssl CLI (Node cannot
 * issue certificates by itself). Undefined when openssl is not installed.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

export interface TestCert {
  readonly key: string;
  readonly cert: string;
  /** PEM file of the certificate: NODE_EXTRA_CA_CERTS for the clients that should trust it. */
  readonly certPath: string;
}

/** `names`: more subject alternative names (`DNS:host`, `IP:addr`) for one certificate. */
export function makeSelfSignedCert(dir: string, ip = '127.0.0.1', names: readonly string[] = []): TestCert | undefined {
  const keyPath = path.join(dir, 'tls.key');
  const certPath = path.join(dir, 'tls.crt');
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '1', '-subj', `/CN=${ip}`, '-addext', `subjectAltName=${[`IP:${ip}`, ...names].join(',')}`],
      { stdio: 'ignore' },
    );
  } catch {
    return undefined;
  }
  return { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8'), certPath };
}
