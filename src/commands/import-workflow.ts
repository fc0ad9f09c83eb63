import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { manifestYaml, workflowModels } from '../comfy/workflow-models.js';
import { ModelsyncError } from '../errors.js';
import { readBounded } from '../read-bounded.js';

/** ComfyUI's workflows are kilobytes to a few megabytes, big templates included. */
const MAX_WORKFLOW_BYTES = 64 * 1024 * 1024;
import type { CommandIo } from './common.js';

/** `modelsync import-workflow WORKFLOW.json [-o manifest.yaml]`: the models a workflow embeds, as manifest entries. */
export async function importWorkflowCommand(io: CommandIo): Promise<number> {
  const file = io.positionals[0];
  if (file === undefined) throw new ModelsyncError('E_USAGE', 'usage: modelsync import-workflow WORKFLOW.json [-o manifest.yaml]');
  let workflow: unknown;
  try {
    workflow = JSON.parse(await readBounded(file, MAX_WORKFLOW_BYTES, () => new Error(`larger than ${MAX_WORKFLOW_BYTES / 1024 / 1024} MiB`)));
  } catch (e) {
    throw new ModelsyncError('E_USAGE', `cannot read workflow ${file}: ${(e as Error).message}`, { cause: e });
  }
  let models;
  try {
    models = workflowModels(workflow);
  } catch (e) {
    // Subgraphs inside subgraphs, thousands deep: the file's fault.
    if (!(e instanceof RangeError)) throw e;
    throw new ModelsyncError('E_USAGE', `cannot read workflow ${file}: its subgraphs are nested too deeply`, { cause: e });
  }
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
