import { stat } from 'node:fs/promises';
import path from 'node:path';
import { destProblem } from '../manifest/dest.js';

/**
 * Is this dest (FOLDER/FILE, from a request) a file in the models dir now? Never looked up when
 * the dest could leave the models dir: the answer would tell a caller what exists elsewhere.
 */
export async function onDisk(modelsDir: string, dest: string): Promise<boolean> {
  // A folder of the manifest's own (`folders:`) is unknown here, and still inside the models dir.
  const problem = destProblem(dest, []);
  if (problem !== undefined && !problem.startsWith('unknown top folder')) return false;
  try {
    return (await stat(path.join(modelsDir, ...dest.split('/')))).isFile();
  } catch {
    return false;
  }
}
