import { ModelsyncError } from '../errors.js';
import type { CommandIo } from './common.js';

// Being built; replaced by its own module.
export function resyncCommand(_io: CommandIo): Promise<number> {
  return Promise.reject(new ModelsyncError('E_USAGE', '"resync" is not available yet'));
}
