import { ModelsyncError } from '../errors.js';
import { shown } from '../remote-value.js';
import { parseContentLength, parseContentRange } from '../transfer/content-range.js';
import { headerValue, type HttpResponse } from '../transfer/http.js';
import type { OpenBody } from './source.js';

/**
 * Turn a 200/206 HTTP answer into an OpenBody, parsing Content-Range and Content-Length. A 206
 * whose range cannot be read, or whose Content-Length is not that range's length, is E_RANGE:
 * the downloader then stops asking this server for ranges.
 */
export function bodyFromResponse(res: HttpResponse): OpenBody {
  const length = parseContentLength(headerValue(res.headers, 'content-length'));
  const origin = new URL(res.url).origin;
  if (res.status === 206) {
    const cr = headerValue(res.headers, 'content-range');
    const range = parseContentRange(cr);
    const problem = range === undefined ? 'without a usable Content-Range' : length !== undefined && length !== range.end - range.start ? `whose Content-Length ${length} is not the length of its range` : undefined;
    if (range === undefined || problem !== undefined) {
      res.body.discard();
      throw new ModelsyncError('E_RANGE', `${origin} answered 206 ${problem ?? ''} (Content-Range ${shown(cr)})`, { url: origin, retryable: false });
    }
    return { status: 206, range, length, body: res.body, origin };
  }
  return { status: 200, range: undefined, length, body: res.body, origin };
}
