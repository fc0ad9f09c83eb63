import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { RateFloor, type RateRule } from '../transfer/rate-floor.js';
import { requestHost, underFloor, type Handler, type Middleware, type WireRequest } from './s3-middleware.js';

/** The fields of the SDK's HttpResponse these read and replace, checked rather than trusted. */
interface WireResponse {
  readonly statusCode?: number;
  body: unknown;
}

/**
 * Every answer this client's SDK reads whole (the XML of CreateMultipartUpload, of
 * CompleteMultipartUpload, of PutObject and UploadPart, of any error) is held to the minimum
 * rate from its head on: the SDK reads those bodies to their end under the socket's idle
 * timeout alone, so an endpoint that trickles them holds an upload, and the sync waiting for
 * it, as long as it likes. A GetObject's body is not one of them: it goes to the download
 * engine, which holds it to the same floor on a budget of its own.
 *
 * Two middlewares: the inner one, under the deserializer, wraps the body; the outer one
 * rethrows the floor's own error, since the deserializer appends to the message of whatever
 * its read fails with, and stops the floor once the answer is read.
 */
export function holdAnswersToRate(client: S3Client, rule: RateRule): void {
  if (rule.minRate <= 0) return;
  const floors = new WeakMap<object, RateFloor>();
  const outer = (next: Handler): Handler => async (args) => {
    const key = args.request;
    if (typeof key !== 'object' || key === null) return next(args);
    const floor = new RateFloor(rule, new AbortController().signal);
    floors.set(key, floor);
    try {
      return await underFloor(floor, () => next(args));
    } finally {
      floors.delete(key);
    }
  };
  const inner = (next: Handler, context: { commandName?: string }): Handler => async (args) => {
    const answer = await next(args);
    const floor = typeof args.request === 'object' && args.request !== null ? floors.get(args.request) : undefined;
    const response = answer.response as WireResponse | undefined;
    const status = response?.statusCode ?? 0;
    const streamed = context.commandName === 'GetObjectCommand' && status >= 200 && status < 300;
    if (floor === undefined || response === undefined || streamed || !isReadable(response.body)) return answer;
    const request = args.request as WireRequest;
    response.body = countedAnswer(response.body, floor, requestHost(request));
    return answer;
  };
  client.middlewareStack.addRelativeTo(outer as Middleware, { relation: 'after', toMiddleware: 'httpSigningMiddleware', name: 'modelsyncAnswerRateFloor', override: true });
  client.middlewareStack.addRelativeTo(inner as Middleware, { relation: 'after', toMiddleware: 'deserializerMiddleware', name: 'modelsyncAnswerRateCount', override: true });
}

function isReadable(body: unknown): body is Readable {
  return typeof body === 'object' && body !== null && typeof (body as Readable).pipe === 'function' && typeof (body as Readable).destroy === 'function';
}

/** The answer's body, counted into the floor as the SDK reads it; torn down when the floor trips. */
function countedAnswer(source: Readable, floor: RateFloor, host: string): Readable {
  const counted = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
      floor.count(chunk.length);
      done(null, chunk);
    },
  });
  const cut = (): void => {
    source.destroy();
    // A plain error: the deserializer adds to its message; the outer middleware throws the floor's.
    counted.destroy(new Error(`${host}: answer cut by the minimum rate`));
  };
  floor.signal.addEventListener('abort', cut, { once: true });
  source.once('error', (e) => counted.destroy(e));
  counted.once('close', () => {
    floor.stop();
    if (!source.destroyed) source.destroy();
  });
  floor.start(host);
  source.pipe(counted);
  return counted;
}
