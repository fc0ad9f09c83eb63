import { fileNameProblem } from '../manifest/dest.js';

/** One file of a model version, as far as its API answer could be trusted. */
export interface CivitaiFile {
  readonly id: number | undefined;
  /** Bounded and printable, but only a dest segment once `nameProblem` is undefined. */
  readonly name: string;
  /** Why `name` cannot be a file name (a path, a hidden name, ...); undefined when it can. */
  readonly nameProblem: string | undefined;
  /** `Model`, `Pruned Model`, `VAE`, `Config`, `Training Data`, ... */
  readonly type: string;
  readonly format: string | undefined;
  readonly size: string | undefined;
  readonly fp: string | undefined;
  /** Lower-case hex; undefined when the API gave none or not 64 hex digits. */
  readonly sha256: string | undefined;
  /** Bytes from `sizeKB`, approximate (a float of KiB): for planning space only, never for verifying. */
  readonly sizeHint: number | undefined;
  readonly primary: boolean;
}

export interface CivitaiVersion {
  readonly id: number;
  readonly modelId: number | undefined;
  /** `Checkpoint`, `LORA`, `TextualInversion`, `VAE`, `Controlnet`, `Upscaler`, ... */
  readonly modelType: string;
  /** `Public`, `EarlyAccess`, `Private`: undefined when the API does not say. */
  readonly availability: string | undefined;
  readonly earlyAccessEndsAt: string | undefined;
  /** `Download`, or `Generation` / `InternalGeneration` (no downloads at all). */
  readonly usageControl: string | undefined;
  readonly files: readonly CivitaiFile[];
}

const MAX_FILES = 200;
/** Longest name kept (longer ones are refused as a dest anyway, at 255 bytes). */
const MAX_NAME = 1024;
const WORD = /^[A-Za-z0-9 ._()-]{1,64}$/;
/** A terabyte of KiB: bigger is a lie, and not worth planning space for. */
const MAX_SIZE_KB = 2 ** 30;

/**
 * A model version from its REST answer, every value from outside checked before use: the id is
 * the one asked for, names are bounded (and marked when unfit to be a file name), a sha256 is 64
 * hex or absent, `sizeKB` a sane number turned into an approximate size. Returns what is wrong
 * instead when the answer is not a model version at all.
 */
export function parseCivitaiVersion(data: unknown, versionId: number): CivitaiVersion | string {
  if (!isObject(data)) return 'the answer is not a JSON object';
  if (data.id !== versionId) return `the answer is for version ${short(data.id)}, not ${versionId}`;
  const model = isObject(data.model) ? data.model : {};
  const modelType = word(model.type);
  if (modelType === undefined) return `model.type ${short(model.type)} is not a model type`;
  if (!Array.isArray(data.files)) return 'it lists no files';
  if (data.files.length > MAX_FILES) return `it lists ${data.files.length} files (more than ${MAX_FILES})`;
  const files: CivitaiFile[] = [];
  for (const f of data.files as unknown[]) {
    if (!isObject(f)) return 'a file entry is not an object';
    if (typeof f.name !== 'string' || f.name.length === 0 || f.name.length > MAX_NAME) return `a file name ${short(f.name)} is missing or too long`;
    const meta = isObject(f.metadata) ? f.metadata : {};
    const hashes = isObject(f.hashes) ? f.hashes : {};
    const sha = typeof hashes.SHA256 === 'string' && /^[0-9a-fA-F]{64}$/.test(hashes.SHA256) ? hashes.SHA256.toLowerCase() : undefined;
    const kb = f.sizeKB;
    const sizeHint = typeof kb === 'number' && Number.isFinite(kb) && kb >= 0 && kb <= MAX_SIZE_KB ? Math.round(kb * 1024) : undefined;
    files.push({
      id: Number.isSafeInteger(f.id) && (f.id as number) > 0 ? (f.id as number) : undefined,
      name: f.name,
      nameProblem: fileNameProblem(f.name),
      type: word(f.type) ?? 'Model',
      format: word(meta.format),
      size: word(meta.size),
      fp: word(meta.fp),
      sha256: sha,
      sizeHint,
      primary: f.primary === true,
    });
  }
  return {
    id: versionId,
    modelId: Number.isSafeInteger(data.modelId) && (data.modelId as number) > 0 ? (data.modelId as number) : undefined,
    modelType,
    availability: word(data.availability),
    earlyAccessEndsAt: typeof data.earlyAccessEndsAt === 'string' && !Number.isNaN(Date.parse(data.earlyAccessEndsAt)) ? new Date(data.earlyAccessEndsAt).toISOString() : undefined,
    usageControl: word(data.usageControl),
    files,
  };
}

/** What the state DB keeps: re-read through parseCivitaiVersion, so a tampered row is refused too. */
export function storedVersion(v: CivitaiVersion): string {
  return JSON.stringify({
    id: v.id,
    modelId: v.modelId,
    model: { type: v.modelType },
    availability: v.availability,
    earlyAccessEndsAt: v.earlyAccessEndsAt,
    usageControl: v.usageControl,
    files: v.files.map((f) => ({
      id: f.id,
      name: f.name,
      type: f.type,
      metadata: { format: f.format, size: f.size, fp: f.fp },
      hashes: f.sha256 === undefined ? {} : { SHA256: f.sha256 },
      sizeKB: f.sizeHint === undefined ? undefined : f.sizeHint / 1024,
      primary: f.primary,
    })),
  });
}

/** A cached version, or undefined when there is none (or the row is not one). */
export function cachedVersion(text: string | undefined, versionId: number): CivitaiVersion | undefined {
  if (text === undefined) return undefined;
  try {
    const v = parseCivitaiVersion(JSON.parse(text), versionId);
    return typeof v === 'string' ? undefined : v;
  } catch {
    return undefined;
  }
}

/** A value for a message: escaped, bounded. */
export function short(v: unknown): string {
  const s = typeof v === 'string' ? v : v === undefined ? 'undefined' : JSON.stringify(v) ?? String(v);
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}...` : s);
}

function word(v: unknown): string | undefined {
  return typeof v === 'string' && WORD.test(v) ? v : undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
