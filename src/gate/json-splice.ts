/**
 * String values replaced inside a JSON text, every other byte left as it was. A prompt is not
 * re-serialised after JSON.parse: ComfyUI seeds go up to 2^64 - 1, which a JavaScript number
 * cannot hold, so `JSON.stringify(JSON.parse(body))` would change the seed of every prompt
 * that uses a large one.
 */

export interface StringEdit {
  /** Object keys from the top (array positions as decimal strings). */
  readonly path: readonly string[];
  readonly value: string;
}

interface Frame {
  readonly array: boolean;
  /** The current key (object) or index (array). */
  key: string;
  /** Object: the next string is a key. */
  wantKey: boolean;
}

export interface JsonScan {
  /** Deepest nesting of arrays and objects. */
  readonly depth: number;
  /** [start, end) of each string value at an edited path, with its replacement. */
  readonly spans: readonly { readonly start: number; readonly end: number; readonly value: string }[];
}

/**
 * One pass over a JSON text that JSON.parse has accepted (or is about to: the depth is checked
 * first, because code that walks a parsed value recursively would overflow its stack on a
 * hostile nesting long before JSON.parse, which does not recurse, gives up). No recursion here.
 */
export function scanJson(text: string, edits: readonly StringEdit[] = []): JsonScan {
  const wanted = new Map<string, string>();
  let editDepth = -1;
  for (const e of edits) {
    wanted.set(JSON.stringify(e.path), e.value);
    editDepth = editDepth === -1 || editDepth === e.path.length ? e.path.length : -2;
  }
  if (editDepth === -2) throw new Error('scanJson: edits must share one depth');
  const stack: Frame[] = [];
  const spans: { start: number; end: number; value: string }[] = [];
  let depth = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) {
      // { [
      stack.push({ array: c === 0x5b, key: '0', wantKey: c === 0x7b });
      if (stack.length > depth) depth = stack.length;
      i++;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      i++;
    } else if (c === 0x2c) {
      // ,
      const top = stack[stack.length - 1];
      if (top?.array) top.key = String(Number(top.key) + 1);
      else if (top) top.wantKey = true;
      i++;
    } else if (c === 0x22) {
      const end = stringEnd(text, i);
      const top = stack[stack.length - 1];
      if (top && !top.array && top.wantKey) {
        top.key = JSON.parse(text.slice(i, end)) as string;
        top.wantKey = false;
      } else if (stack.length === editDepth) {
        const value = wanted.get(JSON.stringify(stack.map((f) => f.key)));
        if (value !== undefined) spans.push({ start: i, end, value });
      }
      i = end;
    } else {
      // whitespace, ':', a number, true, false, null
      i++;
    }
  }
  return { depth, spans };
}

/** The text with every span replaced by its value, as a JSON string. */
export function applySpans(text: string, spans: JsonScan['spans']): string {
  let out = '';
  let at = 0;
  for (const s of spans) {
    out += text.slice(at, s.start) + JSON.stringify(s.value);
    at = s.end;
  }
  return out + text.slice(at);
}

/** Index just past the closing quote of the string starting at `start`. */
function stringEnd(text: string, start: number): number {
  let i = start + 1;
  for (;;) {
    const q = text.indexOf('"', i);
    if (q < 0) return text.length;
    // The quote is escaped when an odd number of backslashes precede it.
    let b = q - 1;
    while (b > start && text.charCodeAt(b) === 0x5c) b--;
    if ((q - 1 - b) % 2 === 0) return q + 1;
    i = q + 1;
  }
}
