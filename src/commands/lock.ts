import { loadConfig } from '../config.js';
import { ModelsyncError } from '../errors.js';
import { createLogger } from '../log.js';
import { readManifestFiles } from '../manifest/files.js';
import { parseManifest } from '../manifest/load.js';
import { parseLock, writeLock, type LockEntry, type LockFile } from '../manifest/lock.js';
import { prepareModelsDir } from '../models-dir.js';
import { openContext } from '../sync/context.js';
import { pinManifest, type PinOutcome } from '../sync/pin.js';
import { fmt } from '../sync/plan.js';
import { abortOnSignals, print, printJson, requireManifestPath, type CommandIo } from './common.js';

/**
 * `modelsync lock`: pin every entry (Hub commit, size, sha256) into `NAME.lock.json` beside the
 * manifest. Entries an existing lock still pins correctly are kept; `--refresh` resolves them
 * all again. Nothing is written unless every entry could be pinned.
 */
export async function lockCommand(io: CommandIo): Promise<number> {
  const config = loadConfig(io.flags, io.env);
  const log = createLogger(config.logLevel, { format: config.logFormat, color: config.color });
  const manifestPath = requireManifestPath(config);
  const files = await readManifestFiles(manifestPath);
  const manifest = parseManifest(files.manifest, files.path, { requireHashes: false });
  const lockFile = files.lockPath;
  let previous: LockFile | undefined;
  try {
    previous = parseLock(files.lock, lockFile);
  } catch (e) {
    if (!(e instanceof ModelsyncError) || e.code !== 'E_LOCK_DRIFT') throw e;
    log.warn({ lockFile }, 'the existing lock file is unusable; writing a new one');
  }
  await prepareModelsDir(config, (what) => io.stderr.write(`modelsync: ${what}\n`), true);
  const ctx = await openContext(config, log);
  const stop = abortOnSignals();
  try {
    const result = await pinManifest(ctx, manifest, { previous, refresh: config.refresh, signal: stop.signal });
    if (!config.json) for (const o of result.outcomes) print(io, describe(o));
    if (result.lock === undefined) {
      const failed = result.outcomes.filter((o) => o.error !== undefined).length;
      if (config.json) printJson(io, { lockFile, written: false, errors: result.outcomes.flatMap((o) => (o.error ? [{ index: o.entry.index, dest: o.entry.dest, code: o.error.code, message: o.error.message }] : [])) });
      else print(io, `${lockFile} not written: ${failed} entr${failed === 1 ? 'y' : 'ies'} could not be locked`);
      return 1;
    }
    await writeLock(lockFile, result.lock);
    if (config.json) {
      printJson(io, { lockFile, written: true, ...result.lock });
    } else {
      const kept = result.outcomes.filter((o) => o.kept).length;
      const downloaded = result.outcomes.filter((o) => !o.kept && o.pin?.sha256From === 'download').length;
      print(io, `wrote ${lockFile}: ${result.lock.entries.length} entries (${kept} kept from the previous lock, ${downloaded} hashed by downloading)`);
    }
    return 0;
  } finally {
    stop.dispose();
    ctx.close();
  }
}

function describe(o: PinOutcome): string {
  if (o.error !== undefined || o.pin === undefined) return `FAILED   ${o.entry.dest}: ${o.error?.message ?? 'not locked'}`;
  const p = o.pin;
  return `${(o.kept ? 'kept' : 'locked').padEnd(8)} ${o.entry.dest} (${fmt(p.size)}) sha256 ${p.sha256.slice(0, 16)}... ${origin(p, o.kept)}`;
}

function origin(p: LockEntry, kept: boolean): string {
  const commit = p.commit === undefined ? '' : `, commit ${p.commit.slice(0, 12)}`;
  if (kept) return `(unchanged${commit})`;
  switch (p.sha256From) {
    case 'hub':
      return `(from the Hub${commit})`;
    case 'manifest':
      return `(from the manifest${commit})`;
    case 's3-checksum':
      return "(from S3's full-object ChecksumSHA256)";
    case 'civitai':
      return `(from Civitai, version ${p.civitai?.version ?? '?'}, file ${JSON.stringify(p.civitai?.file ?? '?')}${p.destDerived ? ', dest derived' : ''})`;
    case 'download':
      // A small Hub file has only a git sha1 at the Hub; anything else can carry its sha256 in the manifest.
      return p.commit === undefined ? `(computed by downloading the file once; add "sha256: ${p.sha256}" to the manifest to skip this)` : `(computed by downloading the file once${commit})`;
  }
}
