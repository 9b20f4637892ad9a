// The live chart: one WebSocket per page (the protocol is in README.md), candles kept in a Map by
// time so that corrections and removals anywhere in the window can be applied, not only at the end.

const {
  createChart, CandlestickSeries, HistogramSeries, CrosshairMode, TickMarkType,
} = window.LightweightCharts;

const MAX_BACKOFF_MS = 10_000;
const FIRST_BACKOFF_MS = 500;
const ZONE_KEY = 'candlewick.timezone';

const page = document.getElementById('dashboard');
const ui = {
  chart: document.getElementById('chart'),
  empty: document.getElementById('chart-empty'),
  symbol: document.getElementById('symbol'),
  interval: document.getElementById('interval'),
  zone: document.getElementById('timezone'),
  price: document.getElementById('last-price'),
  change: document.getElementById('change'),
  changeSince: document.getElementById('change-since'),
  connection: document.getElementById('connection'),
};

const state = {
  // Both were validated by the server before it rendered them into the page.
  symbol: page.dataset.symbol,
  interval: page.dataset.interval,
  candles: new Map(), // t → [t, open, high, low, close, volume]
  firstT: null,
  lastT: null,
  awaitingSnapshot: true,
  shownPair: null, // the pair whose snapshot is on screen
  socket: null,
  attempt: 0,
  retryTimer: null,
  zone: readZone(),
  priceFormat: null,
};

// ---- time zones ----------------------------------------------------------------------------

function readZone() {
  try {
    return localStorage.getItem(ZONE_KEY) === 'local' ? 'local' : 'utc';
  } catch {
    return 'utc'; // storage can be disabled
  }
}

function dateFormats(timeZone) {
  const f = (options) => new Intl.DateTimeFormat(undefined, { timeZone, ...options });
  const hm = { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
  return {
    full: f({ year: 'numeric', month: 'short', day: 'numeric', ...hm }),
    year: f({ year: 'numeric' }),
    month: f({ month: 'short' }),
    day: f({ day: 'numeric', month: 'short' }),
    time: f(hm),
    seconds: f({ ...hm, second: '2-digit' }),
  };
}

// Built once: Intl formatters are expensive and the axis formats many labels per frame.
const FORMATS = { utc: dateFormats('UTC'), local: dateFormats(undefined) };

const formatTime = (t) => FORMATS[state.zone].full.format(new Date(t * 1000));

function formatTickMark(t, type) {
  const f = FORMATS[state.zone];
  const date = new Date(t * 1000);
  switch (type) {
    case TickMarkType.Year: return f.year.format(date);
    case TickMarkType.Month: return f.month.format(date);
    case TickMarkType.DayOfMonth: return f.day.format(date);
    case TickMarkType.TimeWithSeconds: return f.seconds.format(date);
    default: return f.time.format(date);
  }
}

function showZone() {
  ui.zone.textContent = state.zone === 'utc' ? 'UTC' : 'Local time';
  ui.zone.title = state.zone === 'utc' ? 'Times are in UTC; switch to local time' : 'Times are local; switch to UTC';
  // New function objects make the chart redraw its axis and crosshair labels.
  chart.applyOptions({
    localization: { timeFormatter: (t) => formatTime(t) },
    timeScale: { tickMarkFormatter: (t, type) => formatTickMark(t, type) },
  });
  showQuote();
}

// ---- the chart -----------------------------------------------------------------------------

// Colours live in chart.css, so the light and dark themes are defined in one place.
function themeColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function themeOptions() {
  const grid = themeColor('--grid');
  return {
    layout: {
      background: { color: themeColor('--chart-bg') },
      textColor: themeColor('--muted'),
      attributionLogo: true, // the library's licence asks for the link to TradingView
    },
    grid: { vertLines: { color: grid }, horzLines: { color: grid } },
  };
}

const chart = createChart(ui.chart, {
  autoSize: true,
  ...themeOptions(),
  crosshair: { mode: CrosshairMode.Normal },
  rightPriceScale: { borderVisible: false, scaleMargins: { top: 0.08, bottom: 0.26 } },
  timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false },
  // Vertical swipes scroll the page on phones instead of being swallowed by the chart.
  handleScroll: { vertTouchDrag: false },
});

const candleSeries = chart.addSeries(CandlestickSeries, {});
// Volume on its own overlay scale, squeezed into the bottom fifth below the candles.
const volumeSeries = chart.addSeries(HistogramSeries, {
  priceScaleId: 'volume',
  priceFormat: { type: 'volume' },
  lastValueVisible: false,
  priceLineVisible: false,
});
chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

let colors = {};
function applyTheme() {
  colors = {
    up: themeColor('--up'),
    down: themeColor('--down'),
    upVolume: themeColor('--up-volume'),
    downVolume: themeColor('--down-volume'),
  };
  chart.applyOptions(themeOptions());
  candleSeries.applyOptions({
    upColor: colors.up, borderUpColor: colors.up, wickUpColor: colors.up,
    downColor: colors.down, borderDownColor: colors.down, wickDownColor: colors.down,
  });
}

const toBar = ([time, open, high, low, close]) => ({ time, open, high, low, close });
const toVolume = ([time, open, , , close, value]) => ({
  time, value, color: close >= open ? colors.upVolume : colors.downVolume,
});

// Enough decimals for the symbol's magnitude: 2 for BTC/USD, more for sub-unit prices.
function decimalsFor(price) {
  if (!(price > 0)) return 2;
  return Math.min(8, Math.max(2, 3 - Math.floor(Math.log10(price))));
}

function setDecimals(decimals) {
  if (state.priceFormat?.resolvedOptions().maximumFractionDigits === decimals) return;
  state.priceFormat = new Intl.NumberFormat(undefined, {
    minimumFractionDigits: decimals, maximumFractionDigits: decimals,
  });
  candleSeries.applyOptions({ priceFormat: { type: 'price', precision: decimals, minMove: 10 ** -decimals } });
}

/** Replaces everything on screen with the contents of `state.candles`. */
function redraw() {
  const rows = [...state.candles.values()].sort((a, b) => a[0] - b[0]);
  candleSeries.setData(rows.map(toBar));
  volumeSeries.setData(rows.map(toVolume));
  state.firstT = rows.length ? rows[0][0] : null;
  state.lastT = rows.length ? rows[rows.length - 1][0] : null;
  ui.empty.hidden = rows.length > 0;
  showQuote();
}

function applySnapshot(candles) {
  const pair = `${state.symbol} ${state.interval}`;
  state.candles = new Map(candles.map((c) => [c[0], c]));
  setDecimals(decimalsFor(candles[candles.length - 1]?.[4]));
  redraw();
  // A reconnect keeps the user's zoom and scroll; a new symbol or interval starts afresh.
  if (state.shownPair !== pair) chart.timeScale().resetTimeScale();
  state.shownPair = pair;
}

function applyUpdate(candles, removed = []) {
  const changed = [...candles].sort((a, b) => a[0] - b[0]);
  if (state.lastT === null && changed.length) setDecimals(decimalsFor(changed[changed.length - 1][4]));
  for (const c of changed) state.candles.set(c[0], c);
  let rebuild = false;
  for (const t of removed) rebuild = state.candles.delete(t) || rebuild;
  // series.update() only accepts the newest bar or a later one; anything older needs setData.
  if (rebuild || state.lastT === null || (changed.length && changed[0][0] < state.lastT)) {
    redraw();
    return;
  }
  for (const c of changed) {
    candleSeries.update(toBar(c));
    volumeSeries.update(toVolume(c));
  }
  if (changed.length) {
    state.lastT = changed[changed.length - 1][0];
    showQuote();
  }
}

function showQuote() {
  const last = state.candles.get(state.lastT);
  const first = state.candles.get(state.firstT);
  if (!last || !first || !state.priceFormat) {
    ui.price.textContent = '—';
    ui.change.textContent = '—';
    ui.change.dataset.direction = 'flat';
    ui.changeSince.textContent = '';
    return;
  }
  const fmt = state.priceFormat;
  const diff = last[4] - first[1];
  const pct = first[1] ? (diff / first[1]) * 100 : 0;
  const sign = diff > 0 ? '+' : diff < 0 ? '−' : '±';
  ui.price.textContent = fmt.format(last[4]);
  ui.change.textContent = `${sign}${fmt.format(Math.abs(diff))} (${sign}${Math.abs(pct).toFixed(2)}%)`;
  ui.change.dataset.direction = diff > 0 ? 'up' : diff < 0 ? 'down' : 'flat';
  ui.changeSince.textContent = `since ${formatTime(first[0])}`;
}

// ---- the connection ------------------------------------------------------------------------

function setConnection(text) {
  ui.connection.textContent = text;
  ui.connection.dataset.state = text;
}

const isCurrent = (msg) => msg.symbol === state.symbol && msg.interval === state.interval;

function subscribe(socket) {
  socket.send(JSON.stringify({ type: 'subscribe', symbol: state.symbol, interval: state.interval }));
}

function onMessage(data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  switch (msg.type) {
    case 'snapshot':
      // Snapshots and updates for another pair are leftovers from before a switch.
      if (!isCurrent(msg)) return;
      state.awaitingSnapshot = false;
      state.attempt = 0;
      applySnapshot(msg.candles);
      if (ui.connection.dataset.state !== 'stale') setConnection('live');
      break;
    case 'update':
      if (isCurrent(msg) && !state.awaitingSnapshot) applyUpdate(msg.candles, msg.removed);
      break;
    case 'status':
      setConnection(msg.stale ? 'stale' : 'live');
      break;
    case 'error':
      console.warn('candlewick server:', msg.error);
      break;
    default:
      break;
  }
}

function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  const url = new URL('/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = new URLSearchParams({ symbol: state.symbol, interval: state.interval });
  const socket = new WebSocket(url);
  const pair = `${state.symbol} ${state.interval}`;
  state.socket = socket;
  state.awaitingSnapshot = true;
  setConnection('reconnecting');

  socket.addEventListener('open', () => {
    // The user switched while the socket was opening: ask for what is shown in the selectors now.
    if (pair !== `${state.symbol} ${state.interval}`) subscribe(socket);
    loadSymbols();
  });
  socket.addEventListener('message', (ev) => {
    if (socket === state.socket) onMessage(ev.data);
  });
  // 'error' is always followed by 'close', so only 'close' schedules the retry.
  socket.addEventListener('close', () => {
    if (socket !== state.socket) return;
    state.socket = null;
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  setConnection('reconnecting');
  const ceiling = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** state.attempt);
  state.attempt += 1;
  // Jitter spreads the viewers of a restarted server over the interval instead of one burst.
  state.retryTimer = setTimeout(connect, ceiling / 2 + Math.random() * (ceiling / 2));
}

function reconnectNow() {
  if (state.socket === null && state.retryTimer !== null) connect();
}

// ---- controls ------------------------------------------------------------------------------

async function loadSymbols() {
  let listed = [];
  try {
    const res = await fetch('/api/symbols', { headers: { Accept: 'application/json' } });
    if (res.ok) listed = await res.json();
  } catch {
    // Keep whatever the selector shows; the chart itself does not depend on the list.
  }
  const symbols = Array.isArray(listed) ? listed.filter((s) => typeof s === 'string') : [];
  // The current symbol stays selectable even when it has no ticks (yet).
  if (!symbols.includes(state.symbol)) symbols.unshift(state.symbol);
  ui.symbol.replaceChildren(...symbols.map((s) => new Option(s, s, s === state.symbol, s === state.symbol)));
}

function switchTo(symbol, interval) {
  if (symbol === state.symbol && interval === state.interval) return;
  state.symbol = symbol;
  state.interval = interval;
  state.awaitingSnapshot = true;
  document.title = `${symbol} · candlewick`;
  const url = new URL(location.href);
  url.searchParams.set('symbol', symbol);
  url.searchParams.set('interval', interval);
  history.replaceState(null, '', url);
  // A closed or still-connecting socket asks for the new pair once it opens.
  if (state.socket?.readyState === WebSocket.OPEN) subscribe(state.socket);
}

ui.symbol.addEventListener('change', () => switchTo(ui.symbol.value, state.interval));
ui.interval.addEventListener('change', () => switchTo(state.symbol, ui.interval.value));
ui.zone.addEventListener('click', () => {
  state.zone = state.zone === 'utc' ? 'local' : 'utc';
  try {
    localStorage.setItem(ZONE_KEY, state.zone);
  } catch {
    // not persisted; the toggle still works for this page
  }
  showZone();
});

window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
  applyTheme();
  redraw(); // volume colours are part of the data
});
// Coming back online or to the tab skips the rest of a long backoff.
window.addEventListener('online', reconnectNow);
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') reconnectNow();
});

applyTheme();
showZone();
connect();
