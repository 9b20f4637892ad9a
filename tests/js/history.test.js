// Paging back through history: one request at a time, pages as ascending candle arrays, the end
// of history remembered, answers for a pair no longer shown dropped.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createHistory } from '../../static/history.js';

/** A fake `fetch` whose answers the test releases one by one; it records the URLs asked. */
function server() {
  const asked = [];
  const waiting = [];
  globalThis.fetch = (url) => {
    asked.push(new URL(url, 'http://x'));
    return new Promise((resolve) => waiting.push(resolve));
  };
  const answer = async (rows) => {
    waiting.shift()({ ok: true, json: async () => rows });
    await new Promise((r) => setTimeout(r, 0));
  };
  return { asked, answer };
}

const row = (t, close) => ({
  bucket: new Date(t * 1000).toISOString(), open: 1, high: 2, low: 0.5, close, volume: 3,
});

function pager(oldest) {
  const got = [];
  const history = createHistory({
    pair: () => ({ symbol: 'BTC/USD', interval: '1m' }),
    oldest: () => oldest.t,
    pageSize: () => 2,
    onPage: (rows) => {
      got.push(rows);
      oldest.t = rows[0][0];
    },
  });
  return { history, got };
}

test('one page at a time, before the oldest bar, ascending, until none is left', async () => {
  const { asked, answer } = server();
  const oldest = { t: 600 };
  const { history, got } = pager(oldest);
  assert.ok(!history.loading());
  history.more();
  history.more(); // already on its way: not asked twice
  assert.equal(asked.length, 1);
  assert.ok(history.loading());
  assert.deepEqual(Object.fromEntries(asked[0].searchParams), {
    symbol: 'BTC/USD', interval: '1m', before: '600', limit: '2',
  });
  await answer([row(540, 9), row(480, 8)]); // newest first, as the API sends them
  assert.deepEqual(got, [[[480, 1, 2, 0.5, 8, 3], [540, 1, 2, 0.5, 9, 3]]]);
  assert.ok(!history.loading(), 'the page is in');
  history.more();
  assert.equal(asked[1].searchParams.get('before'), '480');
  await answer([]);
  assert.ok(history.complete());
  history.more();
  assert.equal(asked.length, 2, 'nothing is asked after the end');
});

test('a reset drops the answer on its way and starts again', async () => {
  const { asked, answer } = server();
  const { history, got } = pager({ t: 600 });
  history.more();
  history.reset();
  history.more();
  assert.equal(asked.length, 2);
  await answer([row(540, 1)]);
  assert.deepEqual(got, [], 'the answer for before the reset is dropped');
  await answer([row(540, 2)]);
  assert.equal(got.length, 1);
  assert.equal(got[0][0][4], 2);
});
