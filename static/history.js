// Older candles on demand: pages of `/api/candles?before=` (all stored history, not only the
// live window), one request at a time, until the server has nothing older. Changes the
// WebSocket sends for bars not loaded yet are held a while, so a page that was read (or kept
// in the HTTP cache) before such a change still shows it once it arrives.

/** How long a change to a bar not loaded yet is held: a page may be cached a minute. */
const HOLD_MS = 90_000;

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
  let held = new Map(); // bar time → { candle (null: removed), at }

  /** Starts afresh (another pair, or a snapshot that replaced what was loaded). */
  function reset() {
    generation += 1;
    inFlight = false;
    complete = false;
    held = new Map();
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

  /** Keeps WebSocket changes to bars older than the loaded ones for the pages to come. */
  function hold(candles, removed) {
    const at = Date.now();
    for (const [t, entry] of held) if (at - entry.at > HOLD_MS) held.delete(t);
    for (const c of candles) held.set(c[0], { candle: c, at });
    for (const t of removed) held.set(t, { candle: null, at });
  }

  /** The held changes to bars from `from` on: `{ candles, removed }` (forgotten here). */
  function takeHeld(from) {
    const candles = [];
    const removed = [];
    for (const [t, { candle }] of held) {
      if (t < from) continue;
      held.delete(t);
      if (candle) candles.push(candle);
      else removed.push(t);
    }
    return { candles, removed };
  }

  return {
    reset,
    more,
    hold,
    takeHeld,
    /** Whether every stored bar is loaded (the server had nothing older). */
    complete: () => complete,
  };
}
