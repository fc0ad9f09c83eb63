// Preloaded with NODE_OPTIONS=--import: logs to $IMPORT_LOG every ES module the process resolves
// and, at exit, every CommonJS module it required, so a test can tell which code a command
// loaded (the warm path must stay light).
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';

register('./import-log-hooks.mjs', import.meta.url);
const cache = createRequire(import.meta.url).cache;
process.on('exit', () => {
  if (process.env.IMPORT_LOG) appendFileSync(process.env.IMPORT_LOG, Object.keys(cache).map((f) => `${f}\n`).join(''));
});
