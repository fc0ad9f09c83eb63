import type { Config } from '../config.js';
import { ModelsyncError } from '../errors.js';
import type { Entry, Manifest } from '../manifest/types.js';
import type { OpenBody, OpenRequest, RemoteFile, Source } from './source.js';

export interface S3SourceOptions {
  readonly config: Config;
  readonly manifest: Manifest;
  readonly idleTimeoutMs: number;
}

/** Placeholder until the S3 source lands (issue 4). */
export class S3Source implements Source {
  constructor(readonly opts: S3SourceOptions) {}

  resolve(entries: readonly Entry[]): Promise<RemoteFile[]> {
    return Promise.reject(new ModelsyncError('E_S3', 's3:// sources are not supported yet', { entry: entries[0]?.index }));
  }

  open(_file: RemoteFile, _req: OpenRequest): Promise<OpenBody> {
    return Promise.reject(new ModelsyncError('E_S3', 's3:// sources are not supported yet'));
  }
}
