import { parseMirrorUri, type MirrorRef, type S3MirrorRef } from './mirror-uri.js';

export interface MirrorsInput {
  readonly mirrors?: readonly string[] | undefined;
  readonly mirror_write?: string | undefined;
}

/** `mirrors:` and `mirror_write:`, or every problem with them (field paths as in the manifest). */
export function parseMirrors(raw: MirrorsInput): { mirrors: MirrorRef[]; mirrorWrite: S3MirrorRef | undefined; problems: { field: string; message: string }[] } {
  const problems: { field: string; message: string }[] = [];
  const mirrors: MirrorRef[] = [];
  (raw.mirrors ?? []).forEach((uri, i) => {
    const m = parseMirrorUri(uri);
    if ('error' in m) return problems.push({ field: `mirrors.${i}`, message: m.error });
    // Listed twice, a mirror that is down would be waited on twice for every blob.
    if (mirrors.some((o) => o.uri === m.uri)) return problems.push({ field: `mirrors.${i}`, message: `${m.uri} is listed twice` });
    mirrors.push(m);
  });
  let mirrorWrite: S3MirrorRef | undefined;
  if (raw.mirror_write !== undefined) {
    const m = parseMirrorUri(raw.mirror_write);
    if ('error' in m) problems.push({ field: 'mirror_write', message: m.error });
    else if (m.kind !== 's3') problems.push({ field: 'mirror_write', message: 'must be s3://BUCKET/PREFIX/ (an https:// mirror is read-only)' });
    else mirrorWrite = m;
  }
  return { mirrors, mirrorWrite, problems };
}
