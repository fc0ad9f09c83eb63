import { mkdir } from 'node:fs/promises';
import type { Config } from './config.js';
import { ModelsyncError, errnoCode } from './errors.js';

/**
 * A models dir that does not exist yet: created, with its parents, by the commands that fill it
 * (sync, run, lock), as `hf download --local-dir` does, and said (`say`: a line on stderr, or a
 * log record where stderr is JSON) so that a typo shows;
 * refused by the ones that only look (plan, status, verify, gc).
 */
export async function prepareModelsDir(config: Config, say: (what: string) => void, create: boolean): Promise<void> {
  if (config.modelsDirExists) return;
  if (!create) throw new ModelsyncError('E_USAGE', `models dir ${config.modelsDir} does not exist (a sync creates it)`);
  try {
    await mkdir(config.modelsDir, { recursive: true });
  } catch (e) {
    throw new ModelsyncError('E_USAGE', `cannot create models dir ${config.modelsDir}: ${errnoCode(e) ?? String(e)}`, { cause: e });
  }
  say(`created ${config.modelsDir}`);
}
