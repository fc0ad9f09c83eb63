import { ModelsyncError } from '../errors.js';
import { fmt } from '../fmt.js';
import { parseMirrorUri, type S3MirrorRef } from '../manifest/mirror-uri.js';
import { abortOnSignals, loadAll, print, printJson, type CommandIo } from './common.js';

/** `modelsync mirror push --to s3://BUCKET/PREFIX/`: pre-seed a mirror with the manifest's blobs. */
export async function mirrorCommand(io: CommandIo): Promise<number> {
  const [sub, ...extra] = io.positionals;
  if (sub !== 'push') throw new ModelsyncError('E_USAGE', sub === undefined ? 'usage: modelsync mirror push --to s3://BUCKET/PREFIX/' : `unknown mirror subcommand "${sub}" (use: modelsync mirror push --to s3://BUCKET/PREFIX/)`);
  if (extra.length > 0) throw new ModelsyncError('E_USAGE', `mirror push takes no arguments (got "${extra.join(' ')}")`);
  const to = pushTarget(io.flags.to);
  const { config, manifest, ctx } = await loadAll(io);
  const stop = abortOnSignals();
  try {
    const { pushToMirror } = await import('../sync/mirror-push.js');
    const report = await pushToMirror(ctx, manifest, to, stop.signal);
    if (config.json) printJson(io, report);
    else {
      for (const b of report.blobs) {
        const what = b.outcome === 'failed' ? `FAILED    ${b.dests.join(', ')}: ${b.error?.message ?? 'unknown error'}` : `${b.outcome.padEnd(9)} ${b.dests.join(', ')}${b.size === undefined ? '' : ` (${fmt(b.size)})`}`;
        print(io, what);
      }
      print(io, `${report.blobs.length} blobs to ${report.to}: ${report.uploaded} uploaded (${fmt(report.bytes)}), ${report.present} already there, ${report.skipped} skipped (no sha256), ${report.failed} failed`);
    }
    return report.ok ? 0 : 1;
  } finally {
    stop.dispose();
    ctx.close();
  }
}

function pushTarget(raw: string | undefined): S3MirrorRef {
  if (raw === undefined) throw new ModelsyncError('E_USAGE', 'mirror push needs --to s3://BUCKET/PREFIX/');
  const m = parseMirrorUri(raw);
  if ('error' in m) throw new ModelsyncError('E_USAGE', `--to ${raw}: ${m.error}`);
  if (m.kind !== 's3') throw new ModelsyncError('E_USAGE', `--to ${raw}: an https:// mirror is read-only; push to s3://BUCKET/PREFIX/`);
  return m;
}
