import { isIP } from 'node:net';
import { S3Client } from '@aws-sdk/client-s3';
import type { Config } from '../config.js';
import { ModelsyncError } from '../errors.js';
import type { S3Options } from '../manifest/types.js';
import { proxyAgents } from '../proxy/proxy-agents.js';
import type { ProxySettings } from '../proxy/proxy-settings.js';
import { redactUrl } from '../redact.js';
import type { RateRule } from '../transfer/rate-floor.js';
import { holdAnswersToRate } from './s3-answer-floor.js';
import { holdUploadsToRate } from './s3-upload-floor.js';

/** Where and how S3 is reached, after flags, env, manifest and defaults were weighed. */
export interface S3Settings {
  /** Custom endpoint (MinIO, R2, a local mirror); undefined for AWS itself. */
  readonly endpoint: string | undefined;
  /** undefined: left to the SDK (AWS_REGION is already counted; the profile's region remains). */
  readonly region: string | undefined;
  readonly forcePathStyle: boolean;
  readonly profile: string | undefined;
}

/**
 * Endpoint: --s3-endpoint / AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL win over the manifest, so one
 * manifest can be pointed at a mirror. Region: the manifest's wins over AWS_REGION, because
 * platforms set AWS_REGION to where the compute runs, while the manifest names where the bucket
 * is. Path-style addressing is forced where virtual-hosted names cannot resolve: an IP or
 * localhost endpoint.
 */
export function s3Settings(config: Config, manifest: S3Options): S3Settings {
  const endpoint = config.s3.endpoint ?? manifest.endpoint;
  if (endpoint !== undefined) {
    let u: URL;
    try {
      u = new URL(endpoint);
    } catch (e) {
      throw new ModelsyncError('E_CONFIG', `S3 endpoint "${redactUrl(endpoint)}" is not a URL`, { cause: e });
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') {
      throw new ModelsyncError('E_CONFIG', `S3 endpoint ${redactUrl(u)} must be http:// or https://`);
    }
  }
  const region = manifest.region ?? config.s3.region ?? (endpoint === undefined ? undefined : 'us-east-1');
  const forcePathStyle = config.s3.forcePathStyle || manifest.pathStyle === true || (endpoint !== undefined && needsPathStyle(endpoint));
  return { endpoint, region, forcePathStyle, profile: config.s3.profile };
}

function needsPathStyle(endpoint: string): boolean {
  const host = new URL(endpoint).hostname.replace(/^\[|\]$/g, '');
  return isIP(host) !== 0 || host === 'localhost';
}

/**
 * One client per source. The SDK's own retries are off: the transfer engine's policy decides,
 * the same for every source. Checksum calculation and validation are WHEN_REQUIRED because
 * S3-compatible servers reject or mangle the SDK's default flexible checksums; we hash every byte
 * ourselves anyway. The socket timeout is the idle timeout, armed for the body too; an upload's
 * body and every answer the SDK reads whole are also held to the minimum rate
 * (holdUploadsToRate, holdAnswersToRate), a download's body is by the transfer engine.
 */
export function createS3Client(s: S3Settings, idleTimeoutMs: number, maxSockets: number, proxies: ProxySettings, rate: RateRule): S3Client {
  const client = new S3Client({
    ...(s.region === undefined ? {} : { region: s.region }),
    ...(s.endpoint === undefined ? {} : { endpoint: s.endpoint }),
    forcePathStyle: s.forcePathStyle,
    followRegionRedirects: false,
    maxAttempts: 1,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: idleTimeoutMs,
      socketTimeout: idleTimeoutMs,
      // HTTPS_PROXY / HTTP_PROXY / NO_PROXY, per request; plain keep-alive agents without a proxy.
      ...proxyAgents(proxies, maxSockets),
    },
  });
  holdUploadsToRate(client, rate);
  holdAnswersToRate(client, rate);
  return client;
}

/** Where requests go, for messages: the custom endpoint's host, or AWS. */
export function endpointName(s: S3Settings): string {
  return s.endpoint === undefined ? 'AWS S3' : `S3 endpoint ${new URL(s.endpoint).host}`;
}
