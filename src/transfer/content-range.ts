/** A 206's byte range: [start, end) of a file of `total` bytes (undefined: the server said `*`). */
export interface ContentRange {
  readonly start: number;
  readonly end: number;
  readonly total: number | undefined;
}

/**
 * `Content-Range: bytes FIRST-LAST/TOTAL` (or `/*`), RFC 9110 14.4, read strictly: one range,
 * numbers exact as doubles, FIRST <= LAST, and LAST < TOTAL when TOTAL is given. Anything else is
 * undefined: a range we cannot trust is no range, never a guess.
 */
export function parseContentRange(value: string | undefined): ContentRange | undefined {
  if (value === undefined) return undefined;
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/i.exec(value.trim());
  if (!m) return undefined;
  const start = byteCount(m[1]);
  const last = byteCount(m[2]);
  const total = m[3] === '*' ? undefined : byteCount(m[3]);
  if (start === undefined || last === undefined || (m[3] !== '*' && total === undefined)) return undefined;
  if (last < start || (total !== undefined && last >= total) || !Number.isSafeInteger(last + 1)) return undefined;
  return { start, end: last + 1, total };
}

/** A Content-Length: digits only, exact as a double; anything else is no length. */
export function parseContentLength(value: string | undefined): number | undefined {
  return value === undefined ? undefined : byteCount(value.trim());
}

/** Decimal digits naming a whole number of bytes that a double holds exactly (below 2^53). */
export function byteCount(digits: string | undefined): number | undefined {
  if (digits === undefined || !/^\d{1,16}$/.test(digits)) return undefined;
  const n = Number(digits);
  return Number.isSafeInteger(n) ? n : undefined;
}
