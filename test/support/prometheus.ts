export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly type: string;
  readonly help: string;
  readonly samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * A strict reader of the Prometheus text format (0.0.4): HELP and TYPE once per family and
 * before its samples, samples of a family contiguous, valid names, escaped label values, float
 * values, no duplicate series, counters named *_total, a final newline.
 */
export function parsePrometheus(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const help = new Map<string, string>();
  let current: string | undefined;
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, i) => {
    const where = `line ${i + 1} "${line}"`;
    if (line === '') throw new Error(`${where}: empty line`);
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      const [, kind, name = '', rest = ''] = meta;
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name`);
      if (kind === 'HELP') {
        if (help.has(name)) throw new Error(`${where}: second HELP`);
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) throw new Error(`${where}: bad escape in HELP`);
        help.set(name, rest);
      } else {
        if (families.has(name)) throw new Error(`${where}: second TYPE`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: bad type`);
        if (rest === 'counter' && !name.endsWith('_total')) throw new Error(`${where}: counter not named *_total`);
        families.set(name, { type: rest, help: help.get(name) ?? '', samples: [] });
        current = name;
      }
      return;
    }
    if (line.startsWith('#')) throw new Error(`${where}: unexpected comment`);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`${where}: not a sample`);
    const [, name = '', , rawLabels, rawValue = ''] = m;
    if (name !== current) throw new Error(`${where}: sample outside its family (TYPE missing or family split)`);
    const labels: Record<string, string> = {};
    if (rawLabels !== undefined && rawLabels !== '') {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
      let pos = 0;
      while (pos < rawLabels.length) {
        re.lastIndex = pos;
        const lm = re.exec(rawLabels);
        if (!lm || !LABEL.test(lm[1] ?? '')) throw new Error(`${where}: bad label at ${pos}`);
        const key = lm[1] ?? '';
        if (key in labels) throw new Error(`${where}: duplicate label ${key}`);
        labels[key] = (lm[2] ?? '').replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
        pos = re.lastIndex;
        if (lm[3] === '' && pos !== rawLabels.length) throw new Error(`${where}: trailing label text`);
      }
    }
    if (!/^([+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|NaN|[+-]Inf)$/.test(rawValue)) throw new Error(`${where}: bad value`);
    const value = rawValue === '+Inf' ? Infinity : rawValue === '-Inf' ? -Infinity : Number(rawValue);
    const series = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(series)) throw new Error(`${where}: duplicate series`);
    seen.add(series);
    families.get(name)?.samples.push({ name, labels, value });
  });
  for (const [name, f] of families) if (f.help === '') throw new Error(`${name}: no HELP`);
  return families;
}

/** The value of the first sample of `name` whose labels include `labels`. */
export function metricValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  return families.get(name)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}
