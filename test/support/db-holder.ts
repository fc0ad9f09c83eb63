/**
 * Another process holding a SQLite lock on a file, the way a second modelsync, a `sqlite3` shell
 * or a backup tool would: a real process with its own connection, told when to let go.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';

const BETTER_SQLITE3 = createRequire(import.meta.url).resolve('better-sqlite3');

/**
 * 'exclusive': `locking_mode = EXCLUSIVE` and `BEGIN EXCLUSIVE`: nobody else may even read.
 * 'write': `BEGIN IMMEDIATE`: readers go on (WAL), writers wait.
 */
export type LockKind = 'exclusive' | 'write';

export interface DbHolder {
  readonly child: ChildProcess;
  /** Commit, close, exit; resolves once the process is gone. */
  release(): Promise<void>;
}

const SCRIPT = `
const Database = require(process.argv[1]);
const db = new Database(process.argv[2]);
if (process.argv[3] === 'exclusive') { db.pragma('locking_mode = EXCLUSIVE'); db.exec('BEGIN EXCLUSIVE'); }
else db.exec('BEGIN IMMEDIATE');
// Proves the lock is ours and the DB readable by its holder.
db.prepare('SELECT count(*) FROM sqlite_master').get();
process.stdout.write('held\\n');
process.stdin.on('data', () => { db.exec('COMMIT'); db.close(); process.stdout.write('released\\n'); process.exit(0); });
`;

export async function holdLock(file: string, kind: LockKind): Promise<DbHolder> {
  const child = spawn(process.execPath, ['-e', SCRIPT, BETTER_SQLITE3, file, kind], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('held')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`lock holder exited (${String(code)}) before taking the lock`)));
  });
  return {
    child,
    async release() {
      if (child.exitCode === null) child.stdin.write('release\n');
      await exited;
      if (!out.includes('released') && child.exitCode !== 0) throw new Error('the lock holder did not release cleanly');
    },
  };
}
