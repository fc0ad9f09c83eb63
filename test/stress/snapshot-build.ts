/**
 * A private copy of the built CLI for a long stress run. Several engineers share this checkout
 * and `npm run build` rewrites dist/ in place: a run spawning hundreds of processes over minutes
 * must not load half of one build and half of the next. The copy lives under node_modules (which
 * every linter and test runner skips) and resolves its dependencies from the repo's node_modules.
 */
import { cp, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { REPO_ROOT } from '../support/cli.js';

export interface BuildSnapshot {
  /** The copy's bin/modelsync.js. */
  readonly bin: string;
  remove(): Promise<void>;
}

export async function snapshotBuild(): Promise<BuildSnapshot> {
  const root = path.join(REPO_ROOT, 'node_modules', '.cache', `modelsync-stress-${process.pid}`);
  await rm(root, { recursive: true, force: true });
  await mkdir(root, { recursive: true });
  await cp(path.join(REPO_ROOT, 'dist'), path.join(root, 'dist'), { recursive: true });
  await cp(path.join(REPO_ROOT, 'bin'), path.join(root, 'bin'), { recursive: true });
  // Node looks for the package scope (ESM or not) no higher than a node_modules folder.
  await writeFile(path.join(root, 'package.json'), '{"type": "module", "private": true}\n');
  return { bin: path.join(root, 'bin', 'modelsync.js'), remove: () => rm(root, { recursive: true, force: true }) };
}
