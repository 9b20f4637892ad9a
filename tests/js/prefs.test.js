// The chart's view in the URL: what a link says is what the page shows, and back.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  DEFAULT_VIEW, parseView, viewParams, withView,
} from '../../static/prefs.js';

test('a URL without `ind` leaves the view to storage', () => {
  assert.equal(parseView('?symbol=BTC%2FUSD&interval=1m'), null);
  assert.equal(parseView(''), null);
});

test('every view survives the round trip through the URL', () => {
  const views = [
    { ...DEFAULT_VIEW },
    { ...DEFAULT_VIEW, sma: 20, ema: 50, vwap: true, bb: true, rsi: true },
    { ...DEFAULT_VIEW, sma: 7, volume: 'overlay', markers: false },
    { ...DEFAULT_VIEW, ema: 500, rsi: true },
  ];
  for (const view of views) {
    const search = new URLSearchParams(viewParams(view)).toString();
    assert.deepEqual(parseView(search), view, search);
  }
});

test('the defaults stay out of the URL', () => {
  assert.deepEqual(viewParams(DEFAULT_VIEW), [['ind', '']]);
  assert.deepEqual(viewParams({ ...DEFAULT_VIEW, sma: 20, rsi: true }), [['ind', 'sma20,rsi']]);
});

test('a hand-edited link opens with whatever it got right', () => {
  const view = parseView('?ind=sma0,ema9999,sma,vwap,macd,rsi,,BB&vol=sideways&marks=maybe');
  assert.deepEqual(view, { ...DEFAULT_VIEW, vwap: true, rsi: true });
});

test('the view replaces only its own parameters', () => {
  const url = withView(
    'http://x/?symbol=ETH%2FUSD&interval=5m&ind=rsi&theme=dark&vol=overlay',
    { ...DEFAULT_VIEW, bb: true },
    'light',
  );
  assert.equal(url.searchParams.get('symbol'), 'ETH/USD');
  assert.equal(url.searchParams.get('interval'), '5m');
  assert.equal(url.searchParams.get('ind'), 'bb');
  assert.equal(url.searchParams.get('vol'), null);
  assert.equal(url.searchParams.get('theme'), 'light');
  assert.equal(withView('http://x/?theme=dark', DEFAULT_VIEW, null).searchParams.get('theme'), null);
});
