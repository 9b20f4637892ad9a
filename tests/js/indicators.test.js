// The chart's indicator maths against reference computations written the slow, obvious way
// (whole windows, closed forms, per-day filters) and small examples worked by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  sma, ema, vwap, bollinger, rsi, parsePeriod,
} from '../../static/indicators.js';

// ---- data ------------------------------------------------------------------------------------

/** A deterministic price walk (no Math.random: a failure must reproduce). */
function candles(n, start = Date.UTC(2024, 6, 2, 22, 0) / 1000, step = 60) {
  let seed = 42;
  const next = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  let price = 61_000;
  const out = [];
  for (let i = 0; i < n; i++) {
    const open = price;
    price *= 1 + (next() - 0.5) * 0.004;
    const close = price;
    const high = Math.max(open, close) * (1 + next() * 0.001);
    const low = Math.min(open, close) * (1 - next() * 0.001);
    // Some bars trade nothing, as quiet minutes do.
    const volume = next() < 0.1 ? 0 : next() * 3;
    out.push([start + i * step, open, high, low, close, volume]);
  }
  return out;
}

const close = (rows) => rows.map((r) => r[4]);

function assertClose(actual, expected, what) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  expected.forEach((want, i) => {
    const got = actual[i];
    if (want === null) {
      assert.equal(got, null, `${what}[${i}] should be undefined yet`);
      return;
    }
    assert.ok(got !== null, `${what}[${i}] is null, want ${want}`);
    const tolerance = 1e-9 * Math.max(1, Math.abs(want));
    assert.ok(Math.abs(got - want) <= tolerance, `${what}[${i}] = ${got}, want ${want}`);
  });
}

// ---- references ------------------------------------------------------------------------------

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

function refSma(values, period) {
  return values.map((_, i) => (i < period - 1 ? null : mean(values.slice(i - period + 1, i + 1))));
}

/**
 * The smoothed value at i in closed form: the seed (mean of the first `period`) decayed, plus
 * every later value weighted by alpha·(1 − alpha)^age.
 */
function refSmoothed(values, period, alpha) {
  return values.map((_, i) => {
    if (i < period - 1) return null;
    let v = mean(values.slice(0, period)) * (1 - alpha) ** (i - period + 1);
    for (let j = period; j <= i; j++) v += alpha * (1 - alpha) ** (i - j) * values[j];
    return v;
  });
}

const refEma = (values, period) => refSmoothed(values, period, 2 / (period + 1));

function refVwap(rows) {
  const days = rows.map(([t]) => new Date(t * 1000).toISOString().slice(0, 10));
  return rows.map((_, i) => {
    const session = rows.slice(0, i + 1).filter((_, j) => days[j] === days[i]);
    const volume = session.reduce((a, r) => a + r[5], 0);
    if (volume === 0) return null;
    return session.reduce((a, [, , h, l, c, v]) => a + ((h + l + c) / 3) * v, 0) / volume;
  });
}

/** Population variance as the mean squared difference over all pairs, halved. */
function refBollinger(values, period, k) {
  const upper = [];
  const lower = [];
  values.forEach((_, i) => {
    if (i < period - 1) {
      upper.push(null);
      lower.push(null);
      return;
    }
    const w = values.slice(i - period + 1, i + 1);
    let pairs = 0;
    for (const a of w) for (const b of w) pairs += (a - b) ** 2;
    const sd = Math.sqrt(pairs / (2 * period * period));
    upper.push(mean(w) + k * sd);
    lower.push(mean(w) - k * sd);
  });
  return { upper, middle: refSma(values, period), lower };
}

function refRsi(values, period) {
  const changes = values.slice(1).map((v, i) => v - values[i]);
  const up = refSmoothed(changes.map((c) => (c > 0 ? c : 0)), period, 1 / period);
  const down = refSmoothed(changes.map((c) => (c < 0 ? -c : 0)), period, 1 / period);
  return [null, ...up.map((u, i) => {
    if (u === null) return null;
    if (u + down[i] === 0) return 50;
    return (100 * u) / (u + down[i]);
  })];
}

// ---- tests -----------------------------------------------------------------------------------

const rows = candles(1_500);

test('SMA equals the mean of each whole window', () => {
  for (const period of [1, 2, 20, 200]) {
    assertClose(sma(close(rows), period), refSma(close(rows), period), `SMA ${period}`);
  }
});

test('EMA equals its closed form, seeded with the first SMA', () => {
  for (const period of [1, 9, 50]) {
    // The closed form is quadratic; a few hundred bars are enough to show any drift.
    const some = close(rows).slice(0, 400);
    assertClose(ema(some, period), refEma(some, period), `EMA ${period}`);
  }
});

test('an indicator longer than the data is undefined everywhere', () => {
  const few = close(rows).slice(0, 5);
  assert.deepEqual(sma(few, 20), [null, null, null, null, null]);
  assert.deepEqual(ema(few, 20), [null, null, null, null, null]);
  assert.deepEqual(rsi(few), [null, null, null, null, null]);
  assert.deepEqual(bollinger(few).upper, [null, null, null, null, null]);
});

test('VWAP restarts at each UTC midnight and skips sessions without volume', () => {
  // 1,500 one-minute bars from 22:00 UTC cross two midnights.
  assertClose(vwap(rows), refVwap(rows), 'VWAP');
  const midnight = rows.findIndex(([t]) => t % 86_400 === 0);
  assert.ok(midnight > 0, 'the data crosses a UTC midnight');
  const [, , h, l, c, v] = rows[midnight];
  if (v > 0) assert.equal(vwap(rows)[midnight], (h + l + c) / 3, 'a session starts afresh');
  const silent = rows.slice(0, 3).map((r) => [...r.slice(0, 5), 0]);
  assert.deepEqual(vwap(silent), [null, null, null]);
});

test('Bollinger bands (20, 2) equal the pairwise-variance reference', () => {
  const got = bollinger(close(rows));
  const want = refBollinger(close(rows), 20, 2);
  for (const band of ['upper', 'middle', 'lower']) assertClose(got[band], want[band], `Bollinger ${band}`);
});

test('RSI (14) equals the closed-form reference', () => {
  const some = close(rows).slice(0, 400);
  assertClose(rsi(some), refRsi(some, 14), 'RSI');
});

test('RSI matches a hand-worked example', () => {
  // Period 2 over closes 1, 2, 1, 3: changes +1, −1, +2. The first averages (of +1 and −1) are
  // 0.5 and 0.5: RSI 50. Then gain (0.5 + 2) / 2 = 1.25, loss (0.5 + 0) / 2 = 0.25: RS 5, RSI 83⅓.
  const got = rsi([1, 2, 1, 3], 2);
  assert.deepEqual(got.slice(0, 2), [null, null]);
  assert.equal(got[2], 50);
  assert.ok(Math.abs(got[3] - 250 / 3) < 1e-12, `${got[3]}`);
});

test('RSI is 100 when nothing fell and 50 when nothing moved', () => {
  const rising = Array.from({ length: 20 }, (_, i) => 100 + i);
  assert.equal(rsi(rising)[19], 100);
  assert.equal(rsi(new Array(20).fill(7))[19], 50);
});

test('a changed bar anywhere changes the indicators from that bar on, not before', () => {
  const before = close(rows).slice(0, 300);
  const after = [...before];
  after[150] *= 1.01;
  for (const [name, f] of [['SMA', (v) => sma(v, 20)], ['EMA', (v) => ema(v, 20)], ['RSI', rsi]]) {
    const a = f(before);
    const b = f(after);
    assert.deepEqual(b.slice(0, 150), a.slice(0, 150), `${name} before the change`);
    assert.notEqual(b[150], a[150], `${name} at the change`);
  }
});

test('periods are whole numbers from 1 to 500', () => {
  assert.equal(parsePeriod('20'), 20);
  assert.equal(parsePeriod(' 7 '), 7);
  assert.equal(parsePeriod(500), 500);
  for (const bad of ['0', '501', '-3', '2.5', 'x', '', '1e2']) assert.equal(parsePeriod(bad), null, bad);
});
