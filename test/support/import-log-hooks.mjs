import { appendFileSync } from 'node:fs';

/** Module resolution hook (runs off the main thread): one resolved URL per line. */
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (process.env.IMPORT_LOG) appendFileSync(process.env.IMPORT_LOG, `${r.url}\n`);
  return r;
}
