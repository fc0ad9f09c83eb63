import { ModelsyncError } from '../errors.js';
import type { ManifestProblem } from './types.js';

/** A manifest refused before any byte moved: every problem, each with entry, field and line. */
export class ManifestError extends ModelsyncError {
  readonly problems: readonly ManifestProblem[];
  readonly file: string;

  constructor(file: string, problems: readonly ManifestProblem[]) {
    super('E_MANIFEST', formatProblems(file, problems));
    this.file = file;
    this.problems = problems;
  }
}

export function formatProblem(file: string, p: ManifestProblem): string {
  const where = p.line === undefined ? file : `${file}:${p.line}`;
  const what = p.entry === undefined ? p.field : `models[${p.entry}].${p.field}`;
  return `${where}: ${what}: ${p.message}`;
}

function formatProblems(file: string, problems: readonly ManifestProblem[]): string {
  const head = `invalid manifest ${file} (${problems.length} problem${problems.length === 1 ? '' : 's'})`;
  return [head, ...problems.map((p) => `  ${formatProblem(file, p)}`)].join('\n');
}
