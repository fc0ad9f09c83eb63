// The official client as a user would write it: downloadFile() from @huggingface/hub, the
// returned Blob's stream piped to a file. Plain JS (no tsx loader) so its RSS is the client's.
// usage: node bench/hf-download.mjs HUB_URL ORG/NAME PATH OUT
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { downloadFile } from '@huggingface/hub';

const [hubUrl, repo, path, out] = process.argv.slice(2);
if (!hubUrl || !repo || !path || !out) {
  process.stderr.write('usage: hf-download.mjs HUB_URL ORG/NAME PATH OUT\n');
  process.exit(2);
}
const blob = await downloadFile({ repo, path, hubUrl });
if (!blob) {
  process.stderr.write(`${path} not found in ${repo}\n`);
  process.exit(1);
}
await pipeline(Readable.fromWeb(blob.stream()), createWriteStream(out));
