import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The folder the compiled modules sit in (dist/, or src/ under the tests). This module sits at
 * that root, and so does the bin's bundle (dist/modelsync.cjs) it is inlined into, so the
 * answer holds in both without knowing any folder's name.
 */
export function codeRoot(): string {
  return path.dirname(fileURLToPath(import.meta.url));
}
