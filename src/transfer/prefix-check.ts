import type { FileHandle } from 'node:fs/promises';
import { ModelsyncError } from '../errors.js';
import { safetensorsHeaderProblem, safetensorsLengthProblem } from './verify.js';

/**
 * A check of a file's first bytes, made as soon as the download's contiguous prefix covers them,
 * so that a file that cannot be what its name says fails at once instead of after gigabytes.
 */
export interface PrefixCheck {
  /** What the file fails to be, for the error: "not a valid safetensors file". */
  readonly what: string;
  /** Bytes of the file's start it needs next; 0 once it has decided. */
  readonly need: number;
  /** Look at the first `need` bytes: a reason when they are wrong; else it needs more, or is done. */
  look(prefix: Buffer): string | undefined;
}

/** safetensors: the first 8 bytes give the header's length, then the header must be a sane JSON object. */
export function safetensorsPrefix(size: number | undefined): PrefixCheck {
  let need = 8;
  return {
    what: 'not a valid safetensors file',
    get need() {
      return need;
    },
    look(prefix) {
      if (need === 8) {
        const bad = safetensorsLengthProblem(prefix, size);
        if (bad !== undefined) return bad;
        need = 8 + Number(prefix.readBigUInt64LE(0));
        return undefined;
      }
      const len = need - 8;
      need = 0;
      return safetensorsHeaderProblem(prefix.subarray(8), len, size);
    },
  };
}

/**
 * Runs a PrefixCheck against the partial as its contiguous prefix grows: `notify` after each
 * write; `failed` holds the verdict once one is in (the download then stops with it). Reads what
 * is already on disk with positional reads, never the bytes in flight; a block just written at
 * the file's start is looked at in memory (`offer`) instead, which spares a small file its reads
 * (a 100 KiB file's whole header is in its first block: 4 reads, and a thread pool round trip each).
 */
export class PrefixWatch {
  failed: ModelsyncError | undefined;
  private running: Promise<void> | undefined;
  /** A read failed (the partial was closed under it, or shrank): the watch stops deciding. */
  private stopped = false;

  constructor(
    private readonly check: PrefixCheck,
    private readonly fh: FileHandle,
    private readonly contiguous: () => number,
    private readonly uri: string,
  ) {}

  notify(): void {
    if (this.running || this.stopped || this.failed || this.check.need === 0 || this.contiguous() < this.check.need) return;
    // A read that fails (or finds fewer bytes than the prefix claimed) decides nothing, and the
    // watch stops: the whole-file check after the download still runs. Retrying at once would
    // spin: a read of a closed handle fails without any I/O, so the retries would never yield.
    this.running = this.step()
      .then(
        (decided) => {
          if (!decided) this.stopped = true;
        },
        () => {
          this.stopped = true;
        },
      )
      .finally(() => {
        this.running = undefined;
        this.notify();
      });
  }

  /**
   * A block just written at `at`. When it holds every byte the check needs next from the file's
   * start, the check looks at it here, at once (several looks if the block has what each needs).
   */
  offer(block: Buffer, at: number): void {
    if (at !== 0 || this.running || this.stopped) return;
    while (this.failed === undefined && this.check.need > 0 && this.check.need <= block.length) this.decide(block.subarray(0, this.check.need));
  }

  /** Resolves once no look is under way (call before relying on `failed` at the end). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** One look at the prefix; false when the bytes were not there to look at. */
  private async step(): Promise<boolean> {
    const need = this.check.need;
    const buf = Buffer.alloc(need);
    let got = 0;
    while (got < need) {
      const { bytesRead } = await this.fh.read(buf, got, need - got, got);
      if (bytesRead === 0) return false;
      got += bytesRead;
    }
    this.decide(buf);
    return true;
  }

  private decide(prefix: Buffer): void {
    const bad = this.check.look(prefix);
    if (bad !== undefined) this.failed = new ModelsyncError('E_CORRUPT', `${this.uri}: ${this.check.what} (${bad})`, { url: this.uri });
  }
}
