#!/usr/bin/env node
/* global require */
// CommonJS (see bin/package.json), like dist/modelsync.cjs: a warm `modelsync sync` runs
// without Node's ESM loader, whose start-up alone outweighs the warm check.
// The AWS SDK warns on every S3 call that Node 20 support ends; a CLI's users cannot act on it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// src/warm-start.ts, bundled by `npm run build`; every other command loads dist/cli.js from there.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- CommonJS on purpose (above)
require('../dist/modelsync.cjs').runMain(process.argv.slice(2));
