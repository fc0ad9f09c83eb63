import type { S3Client } from '@aws-sdk/client-s3';
import { PacedBody } from '../transfer/paced-body.js';
import { RateFloor, type RateRule } from '../transfer/rate-floor.js';
import { requestHost, underFloor, type Handler, type Middleware, type WireRequest } from './s3-middleware.js';

/**
 * Every request of this client that uploads bytes (PutObject, UploadPart: lib-storage hands
 * both a Buffer) is held to the minimum rate (MODELSYNC_MIN_RATE over MODELSYNC_MIN_RATE_WINDOW),
 * counted as the socket takes the body (PacedBody): the idle timeout alone lets a server that
 * reads a burst every 25 s hold an upload, and the sync waiting for it, for days. A request cut
 * fails with E_TOO_SLOW naming the host (retryable, never progress: the upload's retries end
 * after the attempts); lib-storage then aborts a multipart upload as after any failed part.
 *
 * Placed after signing, so the signature is over the bytes as they were (the body's hash is
 * computed from the Buffer), and inside the retry middleware, so each request gets a floor of
 * its own.
 */
export function holdUploadsToRate(client: S3Client, rule: RateRule): void {
  if (rule.minRate <= 0) return;
  const middleware = (next: Handler): Handler => async (args) => {
    const request = args.request as WireRequest | undefined;
    const body = request?.body;
    if (request === undefined || !(body instanceof Uint8Array) || body.byteLength === 0) return next(args);
    const floor = new RateFloor(rule, new AbortController().signal);
    request.body = new PacedBody(body, floor, requestHost(request));
    return underFloor(floor, () => next(args));
  };
  client.middlewareStack.addRelativeTo(middleware as Middleware, { relation: 'after', toMiddleware: 'httpSigningMiddleware', name: 'modelsyncUploadRateFloor', override: true });
}
