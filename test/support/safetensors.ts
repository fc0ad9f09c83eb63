import { createCipheriv, createHash } from 'node:crypto';

/** Larger payloads are split so that files over a few hundred MiB carry several tensors, like real ones. */
const MAX_TENSOR_BYTES = 256 * 1024 * 1024;

/**
 * AES-128-CTR keystream: deterministic per seed, runs at GB/s, and the payload of a smaller
 * file is a prefix of a larger one with the same seed.
 */
function fillPseudoRandom(target: Buffer, seed: number): void {
  const key = createHash('sha256').update(`modelsync-test-seed:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  // 4 MiB slices measured fastest: big enough to amortise calls, small enough to stay in cache.
  const zeros = Buffer.alloc(Math.min(target.length, 4 << 20));
  for (let off = 0; off < target.length; off += zeros.length) {
    const n = Math.min(zeros.length, target.length - off);
    cipher.update(zeros.subarray(0, n)).copy(target, off);
  }
}

/** A valid safetensors file whose U8 tensors cover exactly `payloadBytes` bytes of data. */
export function makeSafetensors(payloadBytes: number, seed: number): Buffer {
  if (!Number.isSafeInteger(payloadBytes) || payloadBytes < 0) throw new RangeError(`bad payloadBytes: ${payloadBytes}`);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', seed: String(seed) } };
  const count = Math.max(1, Math.ceil(payloadBytes / MAX_TENSOR_BYTES));
  for (let i = 0, off = 0; i < count; i++) {
    const n = Math.min(MAX_TENSOR_BYTES, payloadBytes - off);
    header[`tensor_${i}`] = { dtype: 'U8', shape: [n], data_offsets: [off, off + n] };
    off += n;
  }
  const json = JSON.stringify(header);
  // The JSON is ASCII, so characters are bytes; spaces keep the data 8-byte aligned.
  const padded = json + ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const out = Buffer.allocUnsafe(8 + padded.length + payloadBytes);
  out.writeBigUInt64LE(BigInt(padded.length), 0);
  out.write(padded, 8, 'latin1');
  fillPseudoRandom(out.subarray(8 + padded.length), seed);
  return out;
}
