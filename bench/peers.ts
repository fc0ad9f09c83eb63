import { execFile } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { spawnMeasured, spawnNode, type Measured } from './rss.js';
import { REPO_ROOT } from './setup.js';

const run = promisify(execFile);

/** The environment of peer tools: nothing from the machine but PATH, and a HOME of our own. */
export function peerEnv(home: string): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, LANG: 'C' };
}

export function resolveUrl(endpoint: string, repo: string, file: string): string {
  return `${endpoint}/${repo}/resolve/main/${file}`;
}

/** `curl -L -o OUT URL` (plus -sS and --fail so that an error is an exit code, not a file). */
export function curl(url: string, out: string, home: string): Promise<Measured> {
  return spawnMeasured('curl', ['-sS', '--fail', '-L', '-o', out, url], { env: peerEnv(home) });
}

/**
 * `curl -L -o`, then `sha256sum -c` and `sync FILE`: what a download script has to add to give
 * what modelsync gives (every byte verified, the file on disk). Not a goal's peer: context.
 */
export function curlVerified(url: string, out: string, home: string, sha256: string): Promise<Measured> {
  const script = 'curl -sS --fail -L -o "$1" "$2" && echo "$3  $1" | sha256sum -c --quiet - && sync "$1"';
  return spawnMeasured('sh', ['-c', script, 'sh', out, url, sha256], { env: peerEnv(home) });
}

const ARIA_QUIET = ['--console-log-level=warn', '--summary-interval=0', '--download-result=hide', '--allow-overwrite=true', '--auto-file-renaming=false'];

/**
 * `aria2c -x16 -s16` (plus `extra`, e.g. `-k1M`): 16 connections on one file. Everything else is
 * aria2's default.
 */
export function aria2Split(url: string, out: string, home: string, extra: readonly string[] = []): Promise<Measured> {
  const args = ['-x16', '-s16', ...extra, ...ARIA_QUIET, '-d', path.dirname(out), '-o', path.basename(out), url];
  return spawnMeasured('aria2c', args, { env: peerEnv(home) });
}

/**
 * `aria2c -jN -i list` (default `-j16`: 16 files at once, one connection each), plus `extra`
 * (`-x16 -s16` for the LoRA pack).
 */
export async function aria2List(urls: readonly { url: string; out: string }[], dir: string, home: string, jobs = 16, extra: readonly string[] = []): Promise<Measured> {
  const list = path.join(home, 'aria2-list.txt');
  await writeFile(list, urls.map((u) => `${u.url}\n  out=${u.out}\n`).join(''));
  return spawnMeasured('aria2c', [`-j${jobs}`, ...extra, ...ARIA_QUIET, '-d', dir, '-i', list], { env: peerEnv(home) });
}

/** `downloadFile({repo, path, hubUrl})` from @huggingface/hub, its Blob streamed to disk. */
export function hfClient(endpoint: string, repo: string, file: string, out: string, home: string): Promise<Measured> {
  return spawnNode(path.join(REPO_ROOT, 'bench', 'hf-download.mjs'), [endpoint, repo, file, out], { env: peerEnv(home) });
}

async function has(cmd: string): Promise<boolean> {
  try {
    await run(cmd, ['--version']);
    return true;
  } catch {
    return false;
  }
}

export const ARIA2_INSTALL = 'apt-get update && apt-get install -y aria2';

/**
 * aria2c comes from Debian's packages. As root the bench installs it (refreshing the package
 * lists first when they are empty); otherwise it says exactly what to run and the aria2 rows are
 * skipped. Returns whether aria2c is usable.
 */
export async function ensureAria2(log: (s: string) => void, allowInstall: boolean): Promise<boolean> {
  if (await has('aria2c')) return true;
  const root = process.getuid?.() === 0;
  if (!root || !allowInstall) {
    log(`aria2c is not installed: its rows are skipped. Install it with:\n    sudo sh -c '${ARIA2_INSTALL}'`);
    return false;
  }
  log('aria2c is not installed; installing it from Debian packages (apt-get install -y aria2)...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const lists = await readdir('/var/lib/apt/lists').catch(() => [] as string[]);
  try {
    if (!lists.some((n) => n.endsWith('_Packages') || n.endsWith('_Packages.lz4'))) await run('apt-get', ['update'], { env });
    try {
      await run('apt-get', ['install', '-y', '--no-install-recommends', 'aria2'], { env });
    } catch {
      // Stale lists name package versions the mirror no longer has.
      await run('apt-get', ['update'], { env });
      await run('apt-get', ['install', '-y', '--no-install-recommends', 'aria2'], { env });
    }
  } catch (e) {
    log(`could not install aria2 (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); run: ${ARIA2_INSTALL}`);
    return false;
  }
  return has('aria2c');
}
