import type { S3Client } from '@aws-sdk/client-s3';
import type { RateFloor } from '../transfer/rate-floor.js';

/** What the S3 client's middleware stack takes (s3-upload-floor.ts, s3-answer-floor.ts). */
export type Middleware = Parameters<S3Client['middlewareStack']['addRelativeTo']>[0];
/** A handler, as far as ours need: they pass the SDK's arguments and answer on. */
export type Handler = (args: { input: object; request: unknown }) => Promise<{ output: object; response: unknown }>;

/** The fields of the SDK's HttpRequest ours read and replace, checked rather than trusted. */
export interface WireRequest {
  body?: unknown;
  readonly hostname?: string;
  readonly port?: number;
}

/** `host[:port]` of a request: what a floor's error names. */
export function requestHost(r: WireRequest): string {
  return `${r.hostname ?? 'S3'}${r.port === undefined ? '' : `:${r.port}`}`;
}

/**
 * The rest of the stack under `floor`: when it tripped, its error is the one thrown (whatever the
 * SDK made of the cut), and the floor stops once the request is over either way.
 */
export async function underFloor<T>(floor: RateFloor, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    throw floor.tripped ?? e;
  } finally {
    floor.stop();
  }
}
