// What the chart shows besides symbol and interval (indicators, volume pane, correction markers,
// theme), kept in the URL so a link opens the same chart, and in localStorage so a plain visit
// does. A URL with `ind` describes the whole view; without it the stored view applies.

import { parsePeriod } from './indicators.js';

const VIEW_KEY = 'candlewick.view';
const THEME_KEY = 'candlewick.theme';

export const DEFAULT_PERIODS = { sma: 20, ema: 50 };

/** Nothing but candles and volume in its own pane, with correction markers. */
export const DEFAULT_VIEW = Object.freeze({
  sma: null, ema: null, vwap: false, bb: false, rsi: false, volume: 'pane', markers: true,
});

/**
 * The view a query string asks for (`ind=sma20,ema50,vwap,bb,rsi&vol=overlay&marks=off`), or
 * null when it names no indicators list. Unknown or malformed items are ignored, so a
 * hand-edited link still opens.
 */
export function parseView(search) {
  const params = new URLSearchParams(search);
  const ind = params.get('ind');
  if (ind === null) return null;
  const view = { ...DEFAULT_VIEW };
  for (const item of ind.split(',')) {
    const periodic = /^(sma|ema)(\d+)$/.exec(item);
    if (periodic) view[periodic[1]] = parsePeriod(periodic[2]) ?? view[periodic[1]];
    else if (item === 'vwap' || item === 'bb' || item === 'rsi') view[item] = true;
  }
  view.volume = params.get('vol') === 'overlay' ? 'overlay' : 'pane';
  view.markers = params.get('marks') !== 'off';
  return view;
}

/** The query parameters that describe `view`; the defaults (`vol=pane`, markers on) are left out. */
export function viewParams(view) {
  const ind = [];
  if (view.sma) ind.push(`sma${view.sma}`);
  if (view.ema) ind.push(`ema${view.ema}`);
  for (const flag of ['vwap', 'bb', 'rsi']) if (view[flag]) ind.push(flag);
  const out = [['ind', ind.join(',')]];
  if (view.volume === 'overlay') out.push(['vol', 'overlay']);
  if (!view.markers) out.push(['marks', 'off']);
  return out;
}

/** `view` as the parameters of `url` (other parameters kept). */
export function withView(url, view, theme) {
  const next = new URL(url);
  for (const key of ['ind', 'vol', 'marks', 'theme']) next.searchParams.delete(key);
  for (const [key, value] of viewParams(view)) next.searchParams.set(key, value);
  if (theme) next.searchParams.set('theme', theme);
  return next;
}

function stored(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage can be disabled
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // not persisted; the page still works
  }
}

/** The URL's view, else the stored one, else the default. */
export function loadView() {
  return parseView(location.search) ?? parseView(stored(VIEW_KEY) ?? '') ?? { ...DEFAULT_VIEW };
}

/** Puts `view` (and a chosen theme) into the address bar and storage. */
export function saveView(view, theme) {
  history.replaceState(history.state, '', withView(location.href, view, theme));
  store(VIEW_KEY, new URLSearchParams(viewParams(view)).toString());
}

/** The theme the user chose (URL, then storage; `theme.js` applied it before first paint). */
export const chosenTheme = () => document.documentElement.dataset.themeChosen || null;

export function saveTheme(theme) {
  document.documentElement.dataset.theme = theme;
  document.documentElement.dataset.themeChosen = theme;
  store(THEME_KEY, theme);
}
