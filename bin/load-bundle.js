'use strict';
// Loads one of dist/'s two bundles (see scripts/bundle.mjs) with V8's code cache: compiling the
// CLI's bundle from source was a fifth of a cold sync's CPU before its first byte. The cache sits
// beside the bundles (dist/.v8-cache/), so only whoever can write the code can write its cache:
// V8 cached data is code, and is never read from a file another user could have written.
// Anything wrong with the cache (missing, rejected by V8, unreadable, not writable) costs only the
// compile; it is never an error. NODE_DISABLE_COMPILE_CACHE (Node's own switch for its compile
// cache) turns it off.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

const CACHE_DIR = '.v8-cache';
/** A cache is rewritten when a command's compiled code is this much larger than what it loaded. */
const GROWTH = 1.1;

/** `require(file)` for a CommonJS bundle, compiled through the code cache. */
function loadBundle(file) {
  const loaded = require.cache[file];
  if (loaded !== undefined) return loaded.exports;
  // One open: the stat that names the cache is of the very bytes compiled.
  const fd = fs.openSync(file, 'r');
  let source;
  let st;
  try {
    st = fs.fstatSync(fd);
    source = fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
  const off = process.env.NODE_DISABLE_COMPILE_CACHE !== undefined;
  const cacheFile = cachePath(file, st);
  const cachedData = off ? undefined : readCache(cacheFile, st.uid);
  // The bundles have no import(): scripts/bundle.mjs made each a require().
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, { filename: file, cachedData });
  // Written at exit, not now: by then V8 has compiled the functions this command ran, and the
  // cache holds them too (a cache of the top level alone saves next to nothing). Each command's
  // cache holds what the one it was loaded from held, plus what this command compiled: written
  // again only when that grew, so the file converges on the union of the commands run here.
  if (!off) {
    const had = cachedData === undefined || script.cachedDataRejected === true ? 0 : cachedData.length;
    process.once('exit', () => writeCache(script, cacheFile, st.uid, had));
  }
  // In require.cache like any module: loaded once, and listed where Node lists what it loaded.
  const mod = new Module(file, null);
  mod.filename = file;
  require.cache[file] = mod;
  script.runInThisContext().call(mod.exports, mod.exports, Module.createRequire(file), mod, file, path.dirname(file));
  mod.loaded = true;
  return mod.exports;
}

/**
 * One file per bundle build and Node: V8 checks its own version, its flags and the source's
 * length, not the source itself, so a rebuild of the same length must not meet the old code.
 */
function cachePath(file, st) {
  const key = [path.basename(file), process.version, process.arch, st.size, Math.trunc(st.mtimeMs), st.ino].join('-');
  return path.join(path.dirname(file), CACHE_DIR, `${key}.bin`);
}

/** The cached data, if it is a plain file of the bundle's owner that nobody else may write. */
function readCache(cacheFile, owner) {
  let fd;
  try {
    fd = fs.openSync(cacheFile, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.uid !== owner || (st.mode & 0o022) !== 0) return undefined;
    const dir = fs.lstatSync(path.dirname(cacheFile));
    if (!dir.isDirectory() || dir.uid !== owner || (dir.mode & 0o022) !== 0) return undefined;
    return fs.readFileSync(fd);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Only the bundle's owner writes its cache; a new file under a temporary name, then renamed. */
function writeCache(script, cacheFile, owner, had) {
  if (typeof process.geteuid !== 'function' || process.geteuid() !== owner) return;
  const data = script.createCachedData();
  if (data.length < had * GROWTH) return;
  const dir = path.dirname(cacheFile);
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  try {
    fs.mkdirSync(dir, { mode: 0o755 });
  } catch {
    /* there already, or not writable: the open below says which */
  }
  try {
    const d = fs.lstatSync(dir);
    if (!d.isDirectory() || d.uid !== owner || (d.mode & 0o022) !== 0) return;
    fs.writeFileSync(tmp, data, { flag: 'wx', mode: 0o644 });
    fs.renameSync(tmp, cacheFile);
    prune(dir, path.basename(cacheFile));
  } catch {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* never created */
    }
  }
}

/** Earlier builds' files for the same bundle and Node: each rebuild would leave one behind. */
function prune(dir, keep) {
  const prefix = keep.split('-').slice(0, 3).join('-') + '-';
  for (const name of fs.readdirSync(dir)) {
    if (name !== keep && name.startsWith(prefix) && name.endsWith('.bin')) {
      try {
        fs.unlinkSync(path.join(dir, name));
      } catch {
        /* another process pruned it */
      }
    }
  }
}

module.exports = { loadBundle };
