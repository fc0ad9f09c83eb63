import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Every file under `dirs` (recursively) that contains one of `secrets`, as "path: secret".
 * Store blobs are model bytes the tests wrote themselves and are skipped.
 */
export async function secretsInFiles(dirs: readonly string[], secrets: readonly string[]): Promise<string[]> {
  const hits: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let names;
    try {
      names = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const d of names) {
      const p = path.join(dir, d.name);
      if (d.isDirectory()) {
        if (d.name !== 'blobs') await walk(p);
        continue;
      }
      if (!d.isFile()) continue;
      const text = (await readFile(p)).toString('latin1');
      for (const s of secrets) if (text.includes(s)) hits.push(`${p}: ${s}`);
    }
  };
  for (const d of dirs) await walk(d);
  return hits;
}
