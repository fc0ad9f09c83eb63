// `npm run build`'s second step: bundles tsc's dist/ into the two files the bin loads.
// - dist/modelsync.cjs: src/warm-start.ts alone, packages left to node_modules, so a warm
//   `modelsync sync` loads no parser, logger or download stack (test/warm-start.test.ts).
// - dist/cli.cjs: the whole CLI, with the pure-JS packages it needs on a cold start inlined.
// Both CommonJS: Node's ESM loader resolves, reads and links each module on its own, which on a
// cold sync cost more than the sync's own work before its first byte (docs/performance.md).
import { build } from 'esbuild';

/** Native, or loaded only off the cold path (S3, the daemon's watcher, gate, proxies), or pino-pretty's worker-free formatter, loaded only on a terminal. */
const EXTERNAL = ['better-sqlite3', '@aws-sdk/*', 'chokidar', 'ws', 'http-proxy-3', 'http-proxy-agent', 'https-proxy-agent', 'pino-pretty'];

const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // import() of a package left external becomes require(): an import() inside a script compiled
  // through the code cache (bin/load-bundle.js) needs Node's experimental vm loader, and
  // require() of an ES module (chokidar) is plain Node since 20.19 and 22.12.
  supported: { 'dynamic-import': false },
  logLevel: 'warning',
  // import.meta.url in a CommonJS file: the bundle's own URL (code-root.ts asks for its folder).
  define: { 'import.meta.url': 'import_meta_url' },
  banner: { js: "'use strict'; const import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
};

/** warm-start.ts hands a cold sync and every other command to the CLI's own bundle. */
const cliBundle = {
  name: 'cli-bundle',
  setup(b) {
    b.onResolve({ filter: /^\.\/cli\.js$/ }, () => ({ path: './cli.cjs', external: true }));
  },
};

await Promise.all([
  build({
    ...common,
    entryPoints: ['dist/warm-start.js'],
    outfile: 'dist/modelsync.cjs',
    packages: 'external',
    plugins: [cliBundle],
  }),
  build({ ...common, entryPoints: ['dist/cli.js'], outfile: 'dist/cli.cjs', external: EXTERNAL }),
]);
