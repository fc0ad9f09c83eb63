/** What `fn` throws, for matching on its code and fields; a test fails when it throws nothing. */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw, and nothing was thrown');
}
