import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { manifestYaml, workflowModels } from '../comfy/workflow-models.js';
import { ModelsyncError } from '../errors.js';
import type { CommandIo } from './common.js';

/** `modelsync import-workflow WORKFLOW.json [-o manifest.yaml]`: the models a workflow embeds, as manifest entries. */
export async function importWorkflowCommand(io: CommandIo): Promise<number> {
  const file = io.positionals[0];
  if (file === undefined) throw new ModelsyncError('E_USAGE', 'usage: modelsync import-workflow WORKFLOW.json [-o manifest.yaml]');
  let workflow: unknown;
  try {
    workflow = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new ModelsyncError('E_USAGE', `cannot read workflow ${file}: ${(e as Error).message}`, { cause: e });
  }
  const models = workflowModels(workflow);
  if (models.length === 0) {
    io.stderr.write(`modelsync: ${file} embeds no models list (ComfyUI adds one to templates and to nodes' properties.models)\n`);
    return 1;
  }
  const { yaml, warnings } = manifestYaml(models, path.basename(file));
  const out = io.flags.output;
  if (typeof out === 'string') await writeFile(out, yaml);
  else io.stdout.write(yaml);
  for (const w of warnings) io.stderr.write(`modelsync: review ${w}\n`);
  io.stderr.write(`modelsync: ${models.length} model(s) imported${typeof out === 'string' ? ` into ${out}` : ''}\n`);
  return 0;
}
