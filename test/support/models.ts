import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { Hub, HubFile } from './hub.js';
import { makeSafetensors } from './hub.js';

export interface TestModel {
  readonly repo: string;
  readonly path: string;
  readonly uri: string;
  readonly content: Buffer;
  readonly sha256: string;
}

let counter = 0;

/** A fresh repo with one valid safetensors file of about `bytes` bytes (unique content per call). */
export function addModel(hub: Hub, bytes: number, opts: { name?: string; extra?: HubFile[]; private?: boolean; gated?: boolean } = {}): TestModel {
  counter++;
  const repo = `test-org/${opts.name ?? `model-${process.pid}-${counter}`}`;
  const file = 'model.safetensors';
  const content = makeSafetensors(bytes, counter * 7919 + process.pid);
  hub.addRepo({ id: repo, files: [{ path: file, content }, ...(opts.extra ?? [])], ...(opts.private ? { private: true } : {}), ...(opts.gated ? { gated: true } : {}) });
  return { repo, path: file, uri: `hf://${repo}/${file}`, content, sha256: sha256(content) };
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export async function fileSha256(p: string): Promise<string> {
  return sha256(await readFile(p));
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}
