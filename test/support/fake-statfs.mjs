/**
 * Preload (`node --import`) that makes statfs report a network file system for every path under
 * FAKE_STATFS_PREFIX, so a black-box CLI test can put its state dir "on NFS" without a real
 * NFS mount. Only the answer's `type` changes; everything else is the real statfs.
 */
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

const prefix = process.env.FAKE_STATFS_PREFIX;
const type = Number(process.env.FAKE_STATFS_TYPE ?? 0x6969);
const realSync = fs.statfsSync;
const realAsync = fs.promises.statfs;
const fake = (p, answer) => (prefix && String(p).startsWith(prefix) ? Object.assign(Object.create(Object.getPrototypeOf(answer)), answer, { type }) : answer);

fs.statfsSync = (p, opts) => fake(p, realSync(p, opts));
fs.promises.statfs = async (p, opts) => fake(p, await realAsync(p, opts));
syncBuiltinESMExports();
