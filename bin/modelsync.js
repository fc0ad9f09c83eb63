#!/usr/bin/env node
// The AWS SDK warns on every S3 call that Node 20 support ends; a CLI's users cannot act on it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const { runMain } = await import('../dist/cli.js');

runMain(process.argv.slice(2));
