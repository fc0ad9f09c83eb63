import { ModelsyncError } from '../errors.js';
import type { CommandIo } from './common.js';

// Being built; replaced by its own module.
export function comfyPathsCommand(_io: CommandIo): Promise<number> {
  return Promise.reject(new ModelsyncError('E_USAGE', '"comfy-paths" is not available yet'));
}
