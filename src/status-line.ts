/**
 * The one status line a terminal may hold (the progress bar, redrawn in place with `\r`). A log
 * record written while it is drawn would be glued to its end: the logger asks for it to be
 * cleared first, and the bar draws itself again on its next tick.
 */
let drawn = false;

/** The progress bar just drew itself (without a newline). */
export function statusLineDrawn(visible: boolean): void {
  drawn = visible;
}

/** What to write before a log record: the erase sequence while a status line is drawn. */
export function clearStatusLine(): string {
  if (!drawn) return '';
  drawn = false;
  return '\r\x1b[K';
}
