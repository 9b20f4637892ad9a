// The live chart: it opens with a screen's worth of the newest candles and loads older ones
// page by page as the user scrolls back; corrections and removals anywhere in what is loaded
// are applied, not only at the end. This module draws; the pieces live in their own modules:
// the loaded candles and how messages change them (store.js), the WebSocket (live.js), older
// pages (history.js),
// series and indicators (plots.js), the read-out (legend.js), correction markers (markers.js),
// export, time zones, the view kept in the URL (prefs.js) and keyboard shortcuts.

import { createPlots } from './plots.js';
import { createLegend } from './legend.js';
import { createCorrections } from './markers.js';
import { fileStem, savePng, saveCsv } from './export.js';
import {
  readZone, saveZone, formatTime, formatClock, formatTickMark, zoneName, zonedTimeScale,
} from './zone.js';
import {
  DEFAULT_PERIODS, loadView, saveView, withView, chosenTheme, saveTheme,
} from './prefs.js';
import { parsePeriod } from './indicators.js';
import { installShortcuts } from './keys.js';
import { createLive } from './live.js';
import { createHistory } from './history.js';
import { createStore } from './store.js';

const {
  createChartEx, defaultHorzScaleBehavior, CrosshairMode, TickMarkType,
} = window.LightweightCharts;

/**
 * Snapshot sizes the page asks for: the server caches one serialized snapshot per size, so
 * every viewer of a pair shares one of these few.
 */
const LIMIT_CLASSES = [500, 1_000, 1_500];
/** The chart library's default width of a bar, in CSS pixels. */
const BAR_PX = 6;
/** Colours the chart takes from chart.css, so each theme is defined in one place. */
const COLOR_VARS = [
  '--chart-bg', '--muted', '--grid', '--up', '--down', '--up-volume', '--down-volume',
  '--sma', '--ema', '--vwap', '--bb', '--rsi', '--marker',
];

const page = document.getElementById('dashboard');
const byId = (id) => document.getElementById(id);
const ui = {
  chart: byId('chart'),
  empty: byId('chart-empty'),
  symbol: byId('symbol'),
  interval: byId('interval'),
  zone: byId('timezone'),
  theme: byId('theme'),
  price: byId('last-price'),
  change: byId('change'),
  changeSince: byId('change-since'),
  connection: byId('connection'),
  tip: byId('marker-tip'),
  help: byId('help'),
  sma: byId('ind-sma'),
  smaPeriod: byId('sma-period'),
  ema: byId('ind-ema'),
  emaPeriod: byId('ema-period'),
  vwap: byId('ind-vwap'),
  bb: byId('ind-bb'),
  rsi: byId('ind-rsi'),
  volume: byId('volume-mode'),
  markers: byId('show-markers'),
};

const state = {
  // Both were validated by the server before it rendered them into the page.
  symbol: page.dataset.symbol,
  interval: page.dataset.interval,
  seq: null, // the last snapshot or update seen, and the server run it came from: to resume
  epoch: null,
  hoverT: null, // the bar under the crosshair, null while the pointer is off the chart
  awaitingSnapshot: true,
  shownPair: null, // the pair whose snapshot is on screen
  correctionsTimer: null,
  zone: readZone(),
  view: loadView(),
  priceFormat: null,
};

const store = createStore();
/** Each interval's width in seconds, as the server rendered it into the interval selector. */
const intervalSeconds = Object.fromEntries([...ui.interval.options].map((o) => [o.value, Number(o.dataset.seconds)]));

const volumeFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 4 });
const studyFormat = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

/** How the legend, tooltips and quote write numbers and times. */
const fmt = {
  price: (v) => (state.priceFormat ? state.priceFormat.format(v) : String(v)),
  volume: (v) => volumeFormat.format(v),
  study: (s) => (s.decimals ? studyFormat.format(s.value) : fmt.price(s.value)),
  time: (t) => formatTime(state.zone, t),
  clock: (t) => formatClock(state.zone, t),
  zone: () => zoneName(state.zone),
};

// ---- the connection ------------------------------------------------------------------------

function setConnection(text) {
  ui.connection.textContent = text;
  ui.connection.dataset.state = text;
}

const isCurrent = (msg) => msg.symbol === state.symbol && msg.interval === state.interval;
const pair = () => ({ symbol: state.symbol, interval: state.interval });

/** Twice the bars the chart's width shows at the default spacing, as one of the classes. */
function snapshotLimit() {
  const wanted = (2 * ui.chart.clientWidth) / BAR_PX;
  return LIMIT_CLASSES.find((n) => n >= wanted) ?? LIMIT_CLASSES[LIMIT_CLASSES.length - 1];
}

const live = createLive({
  pair,
  limit: snapshotLimit,
  resumeFrom() {
    const current = state.shownPair === `${state.symbol} ${state.interval}`;
    return current && state.epoch !== null ? { seq: state.seq, epoch: state.epoch } : null;
  },
  onConnecting() {
    state.awaitingSnapshot = true;
    setConnection('reconnecting');
  },
  onOpen: loadSymbols,
  onMessage(msg) {
    switch (msg.type) {
      case 'snapshot':
        // Snapshots and updates for another pair are leftovers from before a switch.
        if (!isCurrent(msg)) return;
        state.awaitingSnapshot = false;
        live.settled();
        state.seq = msg.seq ?? null;
        state.epoch = msg.epoch ?? null;
        applySnapshot(msg.candles);
        if (ui.connection.dataset.state !== 'stale') setConnection('live');
        break;
      case 'resume':
        // The server still had every update missed while away: they follow, nothing reloads.
        if (!isCurrent(msg)) return;
        state.awaitingSnapshot = false;
        live.settled();
        if (ui.connection.dataset.state !== 'stale') setConnection('live');
        break;
      case 'update':
        if (!isCurrent(msg) || state.awaitingSnapshot) return;
        state.seq = msg.seq ?? state.seq;
        applyUpdate(msg.candles, msg.removed);
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
  },
});

// Connect before building the chart: the server prepares the snapshot while the page sets up.
// Messages are handled only after this module has run to the end.
live.connect();

// ---- the chart -----------------------------------------------------------------------------

const ZonedTimeScale = zonedTimeScale(defaultHorzScaleBehavior(), () => state.zone);
const chart = createChartEx(ui.chart, new ZonedTimeScale(), {
  autoSize: true,
  crosshair: { mode: CrosshairMode.Normal },
  rightPriceScale: { borderVisible: false },
  timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false },
  // Vertical swipes scroll the page on phones instead of being swallowed by the chart.
  handleScroll: { vertTouchDrag: false },
});
const plots = createPlots(chart);
const legend = createLegend(byId('legend'));
const corrections = createCorrections(plots.candles, ui.tip, fmt);
const pages = createHistory({
  pair,
  oldest: store.firstT,
  pageSize: snapshotLimit,
  onPage: prependPage,
});

let colors = {};
function applyTheme() {
  const css = getComputedStyle(document.documentElement);
  colors = Object.fromEntries(COLOR_VARS.map((name) => [name, css.getPropertyValue(name).trim()]));
  const grid = colors['--grid'];
  chart.applyOptions({
    layout: {
      background: { color: colors['--chart-bg'] },
      textColor: colors['--muted'],
      attributionLogo: true, // the library's licence asks for the link to TradingView
      panes: { separatorColor: grid },
    },
    grid: { vertLines: { color: grid }, horzLines: { color: grid } },
  });
  plots.applyTheme(colors);
  corrections.setColor(colors['--marker'], store.byTime());
  const dark = document.documentElement.dataset.theme === 'dark';
  ui.theme.textContent = dark ? 'Dark' : 'Light';
  ui.theme.title = dark ? 'Dark theme; switch to light' : 'Light theme; switch to dark';
  if (store.rows().length) draw(); // volume colours are part of the data
}

function showZone() {
  ui.zone.textContent = state.zone === 'utc' ? 'UTC' : 'Local time';
  ui.zone.title = state.zone === 'utc' ? 'Times are in UTC; switch to local time' : 'Times are local; switch to UTC';
  // New function objects make the chart redraw its axis and crosshair labels.
  chart.applyOptions({
    localization: { timeFormatter: (t) => formatTime(state.zone, t) },
    timeScale: { tickMarkFormatter: (t, type) => formatTickMark(state.zone, t, type, TickMarkType) },
  });
  showQuote();
  showLegend();
}

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
  plots.setDecimals(decimals);
}

/** Replaces everything on screen with the store's candles. */
function draw() {
  const rows = store.rows();
  plots.draw(rows);
  ui.empty.hidden = rows.length > 0;
  corrections.mark(store.byTime());
  showQuote();
  showLegend();
}

function applySnapshot(candles) {
  const shown = `${state.symbol} ${state.interval}`;
  // Older pages loaded before may have missed changes while the socket was down: start over.
  pages.reset();
  store.snapshot(candles);
  setDecimals(decimalsFor(candles[candles.length - 1]?.[4]));
  if (state.shownPair !== shown) corrections.reset();
  draw();
  // A reconnect keeps the user's zoom and scroll; a new symbol or interval starts afresh.
  if (state.shownPair !== shown) chart.timeScale().resetTimeScale();
  state.shownPair = shown;
  // Markers can wait for the candles' first paint; on a small box the request competes with it.
  requestAnimationFrame(() => setTimeout(loadCorrections, 0));
}

function applyUpdate(candles, removed) {
  const wasEmpty = store.lastT() === null;
  const change = store.update(candles, removed, pages.complete());
  if (wasEmpty && store.lastT() !== null) setDecimals(decimalsFor(store.get(store.lastT())[4]));
  // A change to any bar but the newest is a late write or a correction: markers may follow.
  if (change.historic) scheduleCorrections();
  if (change.draw === 'all') {
    draw();
  } else if (change.draw === 'tail') {
    plots.drawTail(store.rows(), change.from);
    showQuote();
    showLegend();
  }
}

/** Adds a page of older bars (and changes held for them) in front, keeping the same bars in view. */
function prependPage(rows) {
  const scale = chart.timeScale();
  const range = scale.getVisibleLogicalRange();
  const added = store.prepend(rows);
  draw();
  // Logical indices count from the oldest bar: the bars on screen moved `added` to the right.
  if (range && added) scale.setVisibleLogicalRange({ from: range.from + added, to: range.to + added });
  loadCorrections();
  loadOlderIfNear();
}

/** Fetches older bars while less than half a screen of them is left of the view. */
function loadOlderIfNear() {
  const range = chart.timeScale().getVisibleLogicalRange();
  if (!range || state.awaitingSnapshot || !store.rows().length) return;
  if (range.from < (range.to - range.from) / 2) pages.more();
}

function showQuote() {
  const quote = state.priceFormat ? store.quote() : null;
  if (!quote) {
    ui.price.textContent = '—';
    ui.change.textContent = '—';
    ui.change.dataset.direction = 'flat';
    ui.changeSince.textContent = '';
    return;
  }
  const { close, diff, percent, since } = quote;
  const sign = diff > 0 ? '+' : diff < 0 ? '−' : '±';
  ui.price.textContent = fmt.price(close);
  ui.change.textContent = `${sign}${fmt.price(Math.abs(diff))} (${sign}${Math.abs(percent).toFixed(2)}%)`;
  ui.change.dataset.direction = diff > 0 ? 'up' : diff < 0 ? 'down' : 'flat';
  ui.changeSince.textContent = `since ${fmt.time(since)}`;
}

/** The legend for the bar under the crosshair, else the newest. */
function showLegend() {
  const t = state.hoverT !== null && store.get(state.hoverT) ? state.hoverT : store.lastT();
  const i = store.indexOf(t);
  legend.show(store.get(t), fmt, i >= 0 ? plots.studiesAt(i) : [], corrections.count(t));
}

chart.timeScale().subscribeVisibleLogicalRangeChange(loadOlderIfNear);

chart.subscribeCrosshairMove((param) => {
  state.hoverT = param.point && typeof param.time === 'number' ? param.time : null;
  showLegend();
  corrections.hover(param);
});

// ---- correction markers --------------------------------------------------------------------

function loadCorrections() {
  clearTimeout(state.correctionsTimer);
  if (!state.view.markers || store.firstT() === null) return;
  const seconds = intervalSeconds[state.interval];
  corrections
    .load({ symbol: state.symbol, seconds, from: store.firstT(), to: store.lastT() + seconds }, store.byTime())
    .then(showLegend);
}

function scheduleCorrections() {
  clearTimeout(state.correctionsTimer);
  // Every open chart sees the same update at once: spread their requests over a second.
  state.correctionsTimer = setTimeout(loadCorrections, 100 + Math.random() * 900);
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
  pages.reset();
  ui.interval.value = interval;
  document.title = `${symbol} · candlewick`;
  const url = new URL(location.href);
  url.searchParams.set('symbol', symbol);
  url.searchParams.set('interval', interval);
  history.replaceState(history.state, '', url);
  live.resubscribe();
}

/** Shows `view` in the indicator menu. */
function showView(view) {
  ui.sma.checked = view.sma !== null;
  ui.smaPeriod.value = String(view.sma ?? DEFAULT_PERIODS.sma);
  ui.ema.checked = view.ema !== null;
  ui.emaPeriod.value = String(view.ema ?? DEFAULT_PERIODS.ema);
  ui.vwap.checked = view.vwap;
  ui.bb.checked = view.bb;
  ui.rsi.checked = view.rsi;
  ui.volume.value = view.volume;
  ui.markers.checked = view.markers;
}

/** The view the indicator menu describes; an invalid period keeps the one in use. */
function viewOfMenu() {
  const period = (input, on, current, fallback) => {
    const typed = parsePeriod(input.value);
    input.setAttribute('aria-invalid', String(typed === null));
    return on ? typed ?? current ?? fallback : null;
  };
  return {
    sma: period(ui.smaPeriod, ui.sma.checked, state.view.sma, DEFAULT_PERIODS.sma),
    ema: period(ui.emaPeriod, ui.ema.checked, state.view.ema, DEFAULT_PERIODS.ema),
    vwap: ui.vwap.checked,
    bb: ui.bb.checked,
    rsi: ui.rsi.checked,
    volume: ui.volume.value === 'overlay' ? 'overlay' : 'pane',
    markers: ui.markers.checked,
  };
}

function changeView() {
  const view = viewOfMenu();
  const wasMarked = state.view.markers;
  state.view = view;
  saveView(view, chosenTheme());
  plots.setView(view);
  if (store.rows().length) draw();
  corrections.setShown(view.markers, store.byTime());
  if (view.markers && !wasMarked) loadCorrections();
  showLegend();
}

/** Esc: the newest bars at the default zoom, every price scale fitted again. */
function resetView() {
  chart.timeScale().resetTimeScale();
  chart.panes().forEach((_, i) => chart.priceScale('right', i).applyOptions({ autoScale: true }));
}

ui.symbol.addEventListener('change', () => switchTo(ui.symbol.value, state.interval));
ui.interval.addEventListener('change', () => switchTo(state.symbol, ui.interval.value));
ui.zone.addEventListener('click', () => {
  state.zone = state.zone === 'utc' ? 'local' : 'utc';
  saveZone(state.zone);
  showZone();
  // The axis picks its day and month marks when data is set: lay it out again, same view.
  const range = chart.timeScale().getVisibleLogicalRange();
  plots.clear();
  draw();
  if (range) chart.timeScale().setVisibleLogicalRange(range);
});
ui.theme.addEventListener('click', () => {
  saveTheme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark');
  saveView(state.view, chosenTheme());
  applyTheme();
});
for (const control of [ui.sma, ui.ema, ui.vwap, ui.bb, ui.rsi, ui.volume, ui.markers, ui.smaPeriod, ui.emaPeriod]) {
  control.addEventListener('change', changeView);
}
byId('export-png').addEventListener('click', () => {
  savePng(chart, fileStem(state.symbol, state.interval, store.lastT() ?? Date.now() / 1000));
});
byId('export-csv').addEventListener('click', () => {
  const range = chart.timeScale().getVisibleRange();
  if (!range) return;
  const stem = fileStem(state.symbol, state.interval, range.to);
  saveCsv(state.symbol, state.interval, intervalSeconds[state.interval], range, stem);
});
byId('help-open').addEventListener('click', () => ui.help.showModal());
installShortcuts({
  help: ui.help,
  intervals: [...ui.interval.options].map((o) => o.value),
  onInterval: (interval) => switchTo(state.symbol, interval),
  onReset: resetView,
});

window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', (ev) => {
  if (chosenTheme()) return;
  document.documentElement.dataset.theme = ev.matches ? 'dark' : 'light';
  applyTheme();
});

showView(state.view);
plots.setView(state.view);
corrections.setShown(state.view.markers, store.byTime());
// The address bar shows the whole view, so copying it shares what is on screen.
history.replaceState(history.state, '', withView(location.href, state.view, chosenTheme()));
applyTheme();
showZone();

/**
 * For the browser tests and the console: the chart, its series, correction markers and the
 * pages of older bars.
 */
export { chart, plots, corrections, pages };
