// Preloaded into measured node children (node --import): at exit, report the process's own
// peak RSS (getrusage ru_maxrss, in KiB) and final read counters to fd 3, which bench/rss.ts
// opened as a pipe. Polling /proc alone would miss whatever happens after the last poll.
import { readFileSync, writeSync } from 'node:fs';

process.on('exit', () => {
  let rchar = 0;
  let readBytes = 0;
  try {
    const io = readFileSync('/proc/self/io', 'utf8');
    rchar = Number(/^rchar:\s+(\d+)/m.exec(io)?.[1] ?? 0);
    readBytes = Number(/^read_bytes:\s+(\d+)/m.exec(io)?.[1] ?? 0);
  } catch {
    /* no procfs */
  }
  try {
    writeSync(3, JSON.stringify({ maxRssKb: process.resourceUsage().maxRSS, rchar, readBytes }));
  } catch {
    /* fd 3 is not ours: run outside the bench */
  }
});
