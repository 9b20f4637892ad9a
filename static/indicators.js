// Indicator maths, free of the page: every function takes plain arrays and returns an array
// aligned with its input, holding a number per bar or null where the indicator is not defined
// yet. Candles are [t, open, high, low, close, volume], ascending by t (Unix seconds, UTC).

/** Periods the page accepts for SMA and EMA. */
export const MIN_PERIOD = 1;
export const MAX_PERIOD = 500;
export const BOLLINGER = { period: 20, deviations: 2 };
export const RSI_PERIOD = 14;

const DAY_SECONDS = 86_400;

/** Simple moving average of the last `period` values. */
export function sma(values, period) {
  const out = new Array(values.length).fill(null);
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    sum += values[i];
    if (i >= period) sum -= values[i - period];
    if (i >= period - 1) out[i] = sum / period;
  }
  return out;
}

/** Exponential moving average (α = 2 / (period + 1)), seeded with the SMA of the first `period`. */
export function ema(values, period) {
  return smoothed(values, period, 2 / (period + 1));
}

/** Smoothing with weight `alpha`, starting from the plain mean of the first `period` values. */
function smoothed(values, period, alpha) {
  const out = new Array(values.length).fill(null);
  let prev = null;
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    if (prev === null) {
      sum += values[i];
      if (i === period - 1) prev = sum / period;
    } else {
      prev = alpha * values[i] + (1 - alpha) * prev;
    }
    out[i] = prev;
  }
  return out;
}

/**
 * Volume-weighted average of the typical price (high + low + close) / 3 since the start of the
 * bar's UTC day; null while the day has traded no volume.
 */
export function vwap(candles) {
  const out = new Array(candles.length).fill(null);
  let day = null;
  let pv = 0;
  let volume = 0;
  candles.forEach(([t, , high, low, close, v], i) => {
    const d = Math.floor(t / DAY_SECONDS);
    if (d !== day) {
      day = d;
      pv = 0;
      volume = 0;
    }
    pv += ((high + low + close) / 3) * v;
    volume += v;
    if (volume > 0) out[i] = pv / volume;
  });
  return out;
}

/** Bollinger bands: the SMA and ± `deviations` population standard deviations around it. */
export function bollinger(values, period = BOLLINGER.period, deviations = BOLLINGER.deviations) {
  const middle = sma(values, period);
  const upper = new Array(values.length).fill(null);
  const lower = new Array(values.length).fill(null);
  for (let i = period - 1; i < values.length; i++) {
    // Two passes over the window: a running sum of squares loses the digits that matter
    // when prices are large and the spread small.
    let squares = 0;
    for (let j = i - period + 1; j <= i; j++) squares += (values[j] - middle[i]) ** 2;
    const width = deviations * Math.sqrt(squares / period);
    upper[i] = middle[i] + width;
    lower[i] = middle[i] - width;
  }
  return { upper, middle, lower };
}

/** Wilder's relative strength index of the closes: 100 when nothing fell, 50 when nothing moved. */
export function rsi(values, period = RSI_PERIOD) {
  const out = new Array(values.length).fill(null);
  const gains = [];
  const losses = [];
  for (let i = 1; i < values.length; i++) {
    const change = values[i] - values[i - 1];
    gains.push(Math.max(change, 0));
    losses.push(Math.max(-change, 0));
  }
  const gain = smoothed(gains, period, 1 / period);
  const loss = smoothed(losses, period, 1 / period);
  for (let i = 0; i < gains.length; i++) {
    if (gain[i] === null) continue;
    if (loss[i] === 0) out[i + 1] = gain[i] === 0 ? 50 : 100;
    else out[i + 1] = 100 - 100 / (1 + gain[i] / loss[i]);
  }
  return out;
}

/** A period typed by the user, or null when it is not a whole number in range. */
export function parsePeriod(text) {
  if (!/^\d{1,3}$/.test(String(text).trim())) return null;
  const n = Number(text);
  return n >= MIN_PERIOD && n <= MAX_PERIOD ? n : null;
}
