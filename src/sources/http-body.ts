import { ModelsyncError } from '../errors.js';
import { headerValue, type HttpResponse } from '../transfer/http.js';
import type { OpenBody } from './source.js';

/** Turn a 200/206 HTTP answer into an OpenBody, parsing Content-Range and Content-Length. */
export function bodyFromResponse(res: HttpResponse): OpenBody {
  const lenRaw = headerValue(res.headers, 'content-length');
  const length = lenRaw === undefined ? undefined : Number(lenRaw);
  if (res.status === 206) {
    const cr = headerValue(res.headers, 'content-range');
    const m = cr === undefined ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(cr.trim());
    if (!m) {
      res.body.discard();
      throw new ModelsyncError('E_RANGE', `206 without a usable Content-Range ("${cr ?? ''}")`, { retryable: false });
    }
    const total = m[3] === '*' ? undefined : Number(m[3]);
    return { status: 206, range: { start: Number(m[1]), end: Number(m[2]) + 1, total }, length, body: res.body, origin: new URL(res.url).origin };
  }
  return { status: 200, range: undefined, length: Number.isFinite(length) ? length : undefined, body: res.body, origin: new URL(res.url).origin };
}
