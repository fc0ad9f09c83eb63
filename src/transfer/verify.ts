import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { ModelsyncError } from '../errors.js';
import type { ContentKey } from '../content-key.js';

/** A hasher for a content key: git blob sha1 hashes a "blob <size>\0" header first. */
export function keyHasher(algo: ContentKey['algo'], size: number | undefined): Hash {
  if (algo === 'sha256') return createHash('sha256');
  if (size === undefined) throw new Error('git blob sha1 needs the size up front');
  return createHash('sha1').update(`blob ${size}\0`);
}

/** Re-hash a file from disk (verify --full, adopting an unknown file). */
export async function hashFile(file: string, algo: ContentKey['algo']): Promise<{ hex: string; size: number }> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const h = keyHasher(algo, size);
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
    let pos = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    return { hex: h.digest('hex'), size: pos };
  } finally {
    await fh.close();
  }
}

const MAX_HEADER = 100 * 1024 * 1024;

/**
 * The safetensors structural check: a sane header length, a JSON object, and tensor data that
 * ends exactly at the end of the file. A truncated or spliced file fails it even with no hash.
 */
export async function checkSafetensors(file: string): Promise<string | undefined> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    if (size < 8) return 'shorter than the 8-byte header length';
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const lenProblem = safetensorsLengthProblem(lenBuf, size);
    if (lenProblem !== undefined) return lenProblem;
    const len = Number(lenBuf.readBigUInt64LE(0));
    const hdr = Buffer.alloc(len);
    await fh.read(hdr, 0, len, 8);
    return safetensorsHeaderProblem(hdr, len, size);
  } finally {
    await fh.close();
  }
}

/** What is wrong with a safetensors file's first 8 bytes (its header's length); `size` when known. */
export function safetensorsLengthProblem(first8: Buffer, size: number | undefined): string | undefined {
  const n = first8.readBigUInt64LE(0);
  if (n < 2n || n > BigInt(MAX_HEADER)) return `header length ${n} is not sane`;
  const len = Number(n);
  if (size !== undefined && 8 + len > size) return `header length ${len} runs past the end of the ${size}-byte file`;
  return undefined;
}

/** What is wrong with the header itself (the `len` bytes after the first 8); `size` when known. */
export function safetensorsHeaderProblem(header: Buffer, len: number, size: number | undefined): string | undefined {
  let json: unknown;
  try {
    json = JSON.parse(header.toString('utf8'));
  } catch {
    return 'header is not JSON';
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return 'header is not a JSON object';
  let end = 0;
  for (const [name, t] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') continue;
    const offs = (t as { data_offsets?: unknown } | null)?.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((x) => Number.isInteger(x) && (x as number) >= 0) || (offs[0] as number) > (offs[1] as number)) {
      return `tensor "${name}" has bad data_offsets`;
    }
    end = Math.max(end, offs[1] as number);
  }
  if (size !== undefined && 8 + len + end !== size) return `tensor data ends at ${8 + len + end} but the file has ${size} bytes`;
  return undefined;
}

export function hashMismatch(uri: string, expected: ContentKey, actual: string, entry?: number): ModelsyncError {
  return new ModelsyncError('E_HASH_MISMATCH', `${uri}: ${expected.algo} mismatch: expected ${expected.hex}, got ${actual}`, { url: uri, entry, retryable: true });
}
