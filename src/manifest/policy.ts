import { globMatches, normaliseGlob } from './glob.js';

/** `on_demand:` in the manifest: which sources a caller may ask for, and how much they may hold. */
export interface OnDemandPolicy {
  /** Normalised globs (see glob.ts); a request must match one. */
  readonly allow: readonly string[];
  /** Capacity of this install's on-demand layer, in bytes. */
  readonly maxBytes: number;
  /** https:// and s3:// requests must carry a sha256 (else they are hashed on first download). */
  readonly requireSha256: boolean;
}

export interface PolicyInput {
  readonly allow: readonly string[];
  readonly max_bytes: number | string;
  readonly require_sha256?: boolean | undefined;
}

const UNITS: Readonly<Record<string, number>> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** The policy, or every problem with it (field paths below `on_demand`). */
export function parsePolicy(raw: PolicyInput): { policy: OnDemandPolicy | undefined; problems: { field: string; message: string }[] } {
  const problems: { field: string; message: string }[] = [];
  const allow: string[] = [];
  raw.allow.forEach((g, i) => {
    const n = normaliseGlob(g);
    if ('error' in n) problems.push({ field: `on_demand.allow.${i}`, message: n.error });
    else allow.push(n.glob);
  });
  const maxBytes = parseBytes(raw.max_bytes);
  if (maxBytes === undefined) problems.push({ field: 'on_demand.max_bytes', message: `must be a size in bytes, or with a unit (K, M, G, T: powers of 1024), e.g. 200G; got ${JSON.stringify(raw.max_bytes)}` });
  if (problems.length > 0 || maxBytes === undefined) return { policy: undefined, problems };
  return { policy: { allow, maxBytes, requireSha256: raw.require_sha256 ?? false }, problems };
}

/** The glob that allows this normalised source URI, if any. */
export function allowingGlob(policy: OnDemandPolicy, uri: string): string | undefined {
  return policy.allow.find((g) => globMatches(g, uri));
}

function parseBytes(v: number | string): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v > 0 ? v : undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(v.trim());
  if (!m) return undefined;
  const n = Math.floor(Number(m[1]) * (UNITS[(m[2] ?? '').toLowerCase()] ?? 1));
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}
