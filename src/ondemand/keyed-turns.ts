/**
 * Work that holds names (dests, sources) runs after all earlier work that held any of them.
 * A caller takes all its names at once, so the order is the order of calls: no cycles.
 */
export class KeyedTurns {
  private readonly last = new Map<string, Promise<void>>();

  async run<T>(names: readonly string[], fn: () => Promise<T>): Promise<T> {
    let release: () => void = () => undefined;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const before = [...new Set(names)].map((n) => {
      const prev = this.last.get(n);
      this.last.set(n, mine);
      return prev;
    });
    try {
      await Promise.all(before);
      return await fn();
    } finally {
      release();
      for (const n of names) if (this.last.get(n) === mine) this.last.delete(n);
    }
  }
}
