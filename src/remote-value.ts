/**
 * A value that came from outside (a Hub answer, a header, a file another node wrote), as it may
 * appear in a message: JSON-escaped, so quotes, control characters and line breaks show as such,
 * with everything beyond printable ASCII escaped too (a right-to-left override cannot garble a
 * terminal), and cut to `max` characters. `undefined` is "nothing".
 */
export function shown(value: unknown, max = 80): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    text = undefined;
  }
  if (text === undefined) return value === undefined ? 'nothing' : `a ${typeof value}`;
  const ascii = text.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return ascii.length > max ? `${ascii.slice(0, max)}... (${ascii.length} characters)` : ascii;
}
