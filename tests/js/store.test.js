// The page's candle store: snapshots replace, updates change or remove bars anywhere in what is
// loaded and say how little the chart must redraw, older pages go in front with the changes
// held for them, and the quote is measured from the snapshot's first bar.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createStore, HOLD_MS } from '../../static/store.js';

const bar = (t, close = 10, open = 10) => [t, open, close + 1, open - 1, close, 1];
const times = (store) => store.rows().map((c) => c[0]);

function loaded(ts, clock = { ms: 0 }) {
  const store = createStore({ now: () => clock.ms });
  store.snapshot(ts.map((t) => bar(t)));
  return store;
}

test('a snapshot replaces everything, ascending, whatever was held', () => {
  const store = loaded([60, 120]);
  store.update([bar(0, 5)], []); // older than loaded: held
  store.snapshot([bar(300), bar(360)]);
  assert.deepEqual(times(store), [300, 360]);
  assert.equal(store.firstT(), 300);
  assert.equal(store.lastT(), 360);
  assert.equal(store.prepend([bar(0)]), 1);
  assert.deepEqual(store.get(0), bar(0), 'the change held before the snapshot is gone');
  store.snapshot([]);
  assert.deepEqual(times(store), []);
  assert.equal(store.firstT(), null);
  assert.equal(store.quote(), null);
});

test('a change to the newest bar or later ones redraws only the tail', () => {
  const store = loaded([60, 120, 180]);
  const rows = store.rows();
  assert.deepEqual(store.update([bar(240, 12), bar(180, 11)]), { draw: 'tail', from: 2, historic: false });
  assert.equal(store.rows(), rows, 'the same rows the series were given, extended');
  assert.deepEqual(times(store), [60, 120, 180, 240]);
  assert.equal(store.get(180)[4], 11);
  assert.deepEqual(store.update([bar(300)]), { draw: 'tail', from: 4, historic: false });
  assert.deepEqual(store.update([], []), { draw: 'none', historic: false });
});

test('a change behind the newest bar or a removal redraws everything and is historic', () => {
  const store = loaded([60, 120, 180]);
  assert.deepEqual(store.update([bar(120, 7), bar(240)]), { draw: 'all', historic: true });
  assert.deepEqual(times(store), [60, 120, 180, 240]);
  assert.equal(store.get(120)[4], 7);
  assert.deepEqual(store.update([], [180]), { draw: 'all', historic: true });
  assert.deepEqual(times(store), [60, 120, 240]);
  assert.deepEqual(store.update([], [999]), { draw: 'none', historic: false }, 'removing no loaded bar changes nothing');
});

test('the first candles after an empty snapshot are drawn whole', () => {
  const store = loaded([]);
  assert.deepEqual(store.update([bar(120), bar(60)]), { draw: 'all', historic: false });
  assert.deepEqual(times(store), [60, 120]);
});

test('changes older than the loaded bars wait for their page', () => {
  const store = loaded([600, 660]);
  assert.deepEqual(store.update([bar(540, 5), bar(300, 6), bar(660, 4)], [480]), {
    draw: 'tail', from: 1, historic: false,
  });
  assert.deepEqual(times(store), [600, 660], 'nothing older is shown before its page');
  // The page was read before the changes: it still has 480 and the old 540.
  assert.equal(store.prepend([bar(420), bar(480), bar(540)]), 2);
  assert.deepEqual(times(store), [420, 540, 600, 660]);
  assert.equal(store.get(540)[4], 5);
  // The change to 300 is for a page further back, and taken only once.
  assert.equal(store.prepend([bar(300), bar(360)]), 2);
  assert.equal(store.get(300)[4], 6);
  assert.equal(store.prepend([bar(300, 9), bar(360)]), 0);
  assert.equal(store.get(300)[4], 9);
});

test('with every stored bar loaded, older changes apply at once', () => {
  const store = loaded([600, 660]);
  assert.deepEqual(store.update([bar(540)], [], true), { draw: 'all', historic: true });
  assert.deepEqual(times(store), [540, 600, 660]);
});

test('held changes are forgotten after a while', () => {
  const clock = { ms: 0 };
  const store = loaded([600], clock);
  store.update([bar(540, 5)], []);
  clock.ms = HOLD_MS + 1;
  store.update([bar(480, 6)], []); // holding again drops what expired
  store.prepend([bar(480), bar(540)]);
  assert.equal(store.get(540)[4], 10, 'the expired change is not applied');
  assert.equal(store.get(480)[4], 6);
});

test('bars are found by time', () => {
  const store = loaded([60, 120, 180, 240]);
  assert.deepEqual([60, 120, 180, 240, 90, 0, null].map(store.indexOf), [0, 1, 2, 3, -1, -1, -1]);
});

test('the quote is the newest close against the open of the snapshot\'s first bar', () => {
  const store = createStore();
  store.snapshot([bar(60, 10, 8), bar(120, 12, 10)]);
  assert.deepEqual(store.quote(), { close: 12, diff: 4, percent: 50, since: 60 });
  store.prepend([bar(0, 1, 1)]);
  assert.equal(store.quote().since, 60, 'older pages do not move the reference');
  store.update([], [60]);
  assert.deepEqual(store.quote(), { close: 12, diff: 11, percent: 1100, since: 0 }, 'gone: the oldest loaded');
});
