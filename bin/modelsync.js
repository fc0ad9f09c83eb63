#!/usr/bin/env node
// CommonJS (see bin/package.json), like the two bundles in dist/: a cold or warm `modelsync sync`
// runs without Node's ESM loader, whose start-up alone outweighed the warm check.
// The AWS SDK warns on every S3 call that Node 20 support ends; a CLI's users cannot act on it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const path = require('node:path');
const { loadBundle } = require('./load-bundle.js');

// src/warm-start.ts answers a warm `sync` alone; every other command is the CLI's own bundle.
const dist = path.join(__dirname, '..', 'dist');
loadBundle(path.join(dist, 'modelsync.cjs')).runMain(process.argv.slice(2), () => loadBundle(path.join(dist, 'cli.cjs')));
