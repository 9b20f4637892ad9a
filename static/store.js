// The candles the page has loaded for the pair on screen, and how each message changes them:
// a snapshot replaces them, an update changes or removes bars anywhere in what is loaded, a page
// of older bars goes in front. Changes to bars older than the loaded ones are held a while for
// the page that will load them (a page may have been read, or kept in the HTTP cache, before
// the change). No DOM and no chart library here: chart.js draws what this module says changed.
// A candle is `[t, open, high, low, close, volume]`, `t` in Unix seconds.

/** How long a change to a bar not loaded yet is held: a page may be cached a minute. */
export const HOLD_MS = 90_000;

const ascending = (a, b) => a[0] - b[0];

/** `now()` gives milliseconds, for the hold's expiry (tests pass their own clock). */
export function createStore({ now = () => Date.now() } = {}) {
  let byTime = new Map(); // t → candle
  let rows = []; // the same candles, ascending
  let sinceT = null; // the snapshot's first bar: the quote's change is measured from it
  let held = new Map(); // t → { candle (null: removed), at }

  const sortRows = () => {
    rows = [...byTime.values()].sort(ascending);
  };
  const firstT = () => (rows.length ? rows[0][0] : null);
  const lastT = () => (rows.length ? rows[rows.length - 1][0] : null);

  /** Replaces everything with a snapshot's candles; held changes belong to what it replaced. */
  function snapshot(candles) {
    byTime = new Map(candles.map((c) => [c[0], c]));
    sinceT = candles[0]?.[0] ?? null;
    held = new Map();
    sortRows();
  }

  function hold(candles, removed) {
    const at = now();
    for (const [t, entry] of held) if (at - entry.at > HOLD_MS) held.delete(t);
    for (const c of candles) held.set(c[0], { candle: c, at });
    for (const t of removed) held.set(t, { candle: null, at });
  }

  /**
   * Applies an update's changed candles and removed bar times. Unless `allLoaded` (every stored
   * bar is in), those older than the oldest loaded bar are held for their page. Returns what
   * the screen must do: `{ draw: 'all' }` after a change behind the newest bar or a removal
   * (series can only append or replace their last point), `{ draw: 'tail', from }` when only
   * `rows()[from..]` changed, `{ draw: 'none' }`; `historic` is true when a bar other than the
   * newest changed (a late write or a correction).
   */
  function update(candles, removed = [], allLoaded = false) {
    let changed = candles;
    let gone = removed;
    const first = firstT();
    if (first !== null && !allLoaded) {
      const older = (t) => t < first;
      hold(changed.filter((c) => older(c[0])), gone.filter(older));
      changed = changed.filter((c) => !older(c[0]));
      gone = gone.filter((t) => !older(t));
    }
    changed = [...changed].sort(ascending);
    const newest = lastT();
    for (const c of changed) byTime.set(c[0], c);
    let deleted = false;
    for (const t of gone) deleted = byTime.delete(t) || deleted;
    const historic = deleted || (newest !== null && changed.length > 0 && changed[0][0] < newest);
    if (historic || newest === null) {
      sortRows();
      return { draw: 'all', historic };
    }
    if (!changed.length) return { draw: 'none', historic };
    let from = rows.length;
    for (const c of changed) {
      if (c[0] === rows[rows.length - 1][0]) {
        rows[rows.length - 1] = c;
        from = Math.min(from, rows.length - 1);
      } else {
        rows.push(c);
      }
    }
    return { draw: 'tail', from, historic };
  }

  /**
   * Puts a page of older bars (ascending, not empty) in front, with the changes held for bars
   * from its first on. Returns how many bars were added in front of those loaded before.
   */
  function prepend(page) {
    const count = rows.length;
    for (const c of page) byTime.set(c[0], c);
    const from = page[0][0];
    for (const [t, { candle }] of held) {
      if (t < from) continue;
      held.delete(t);
      if (candle) byTime.set(t, candle);
      else byTime.delete(t);
    }
    sortRows();
    return rows.length - count;
  }

  /** The index of bar `t` in `rows()`, or -1. */
  function indexOf(t) {
    let lo = 0;
    let hi = rows.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (rows[mid][0] === t) return mid;
      if (rows[mid][0] < t) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /**
   * The quote: the newest close and its change from the open of the snapshot's first bar (of
   * the oldest loaded where that one is gone), or null with nothing loaded.
   */
  function quote() {
    const last = byTime.get(lastT());
    const first = byTime.get(sinceT) ?? byTime.get(firstT());
    if (!last || !first) return null;
    const diff = last[4] - first[1];
    return { close: last[4], diff, percent: first[1] ? (diff / first[1]) * 100 : 0, since: first[0] };
  }

  return {
    snapshot,
    update,
    prepend,
    indexOf,
    quote,
    firstT,
    lastT,
    /** The loaded candles, ascending (the array the series were last given). */
    rows: () => rows,
    /** The loaded candles by time. */
    byTime: () => byTime,
    get: (t) => byTime.get(t),
  };
}
