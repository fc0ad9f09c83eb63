/**
 * Every line of a log stream as a JSON object, refusing what a log shipper would choke on or
 * silently mangle: a line that is not JSON, a value that is not an object, and an object with a
 * key twice (JSON.parse keeps the last one, so `"pid"` twice would lose modelsync's own).
 */
export function jsonLines(text: string): Record<string, unknown>[] {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines.map((line, i) => {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new Error(`line ${i + 1} is not JSON: ${JSON.stringify(line.slice(0, 200))}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`line ${i + 1} is not a JSON object: ${line.slice(0, 200)}`);
    const dup = duplicateKey(line);
    if (dup !== undefined) throw new Error(`line ${i + 1} has the key "${dup}" twice: ${line.slice(0, 200)}`);
    return value as Record<string, unknown>;
  });
}

/**
 * The lines of `text` that are JSON objects, passing over the rest: for picking a run's log
 * records out of its stderr, where jsonLines would refuse a line.
 */
export function logRecords(text: string): Record<string, unknown>[] {
  return text.split('\n').flatMap((line) => {
    try {
      const value: unknown = JSON.parse(line);
      return typeof value === 'object' && value !== null && !Array.isArray(value) ? [value as Record<string, unknown>] : [];
    } catch {
      return [];
    }
  });
}

/** The first key that appears twice in one object of this (valid) JSON text, at any depth. */
export function duplicateKey(json: string): string | undefined {
  const stack: { keys: Set<string>; expectKey: boolean }[] = [];
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let end = i + 1;
      while (json[end] !== '"') end += json[end] === '\\' ? 2 : 1;
      const top = stack.at(-1);
      if (top?.expectKey) {
        const key = JSON.parse(json.slice(i, end + 1)) as string;
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = end;
    } else if (c === '{') stack.push({ keys: new Set(), expectKey: true });
    else if (c === '[') stack.push({ keys: new Set(), expectKey: false });
    else if (c === '}' || c === ']') stack.pop();
    else if (c === ',') {
      const top = stack.at(-1);
      if (top && top.keys.size > 0) top.expectKey = true;
    }
  }
  return undefined;
}
