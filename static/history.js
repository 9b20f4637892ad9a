// Older candles on demand: pages of `/api/candles?before=` (all stored history, not only the
// live window), one request at a time, until the server has nothing older. The store
// (store.js) merges each page with what is loaded.

/** `[{bucket, open, high, low, close, volume}]`, newest first → candle arrays, ascending. */
function toCandles(page) {
  if (!Array.isArray(page)) return [];
  const rows = [];
  for (const c of page) {
    const t = Date.parse(c?.bucket) / 1000;
    const ohlc = [c?.open, c?.high, c?.low, c?.close];
    if (Number.isFinite(t) && ohlc.every(Number.isFinite)) rows.push([t, ...ohlc, c.volume ?? 0]);
  }
  return rows.sort((a, b) => a[0] - b[0]);
}

/**
 * `pair()` is what the page shows ({ symbol, interval }); `oldest()` the oldest loaded bar's
 * time (or null); `pageSize()` candles per request; `onPage(rows)` gets each page, ascending
 * and strictly older than `oldest()` was.
 */
export function createHistory({ pair, oldest, pageSize, onPage }) {
  let generation = 0; // bumped on every reset: an answer for an older one is dropped
  let inFlight = false;
  let complete = false;

  /** Starts afresh (another pair, or a snapshot that replaced what was loaded). */
  function reset() {
    generation += 1;
    inFlight = false;
    complete = false;
  }

  /** Fetches the page before the oldest loaded bar, unless one is on its way or none is left. */
  async function more() {
    const before = oldest();
    if (inFlight || complete || before === null) return;
    const mine = generation;
    inFlight = true;
    const { symbol, interval } = pair();
    const query = new URLSearchParams({ symbol, interval, before: String(before), limit: String(pageSize()) });
    let rows = null;
    try {
      const res = await fetch(`/api/candles?${query}`, { headers: { Accept: 'application/json' } });
      if (res.ok) rows = toCandles(await res.json());
    } catch {
      // The next scroll asks again.
    }
    if (mine !== generation) return;
    inFlight = false;
    if (rows === null) return;
    if (!rows.length) {
      complete = true;
      return;
    }
    onPage(rows);
  }

  return {
    reset,
    more,
    /** Whether every stored bar is loaded (the server had nothing older). */
    complete: () => complete,
    /** Whether a page is on its way. */
    loading: () => inFlight,
  };
}
