// The chart's series: candles, volume (in its own pane or overlaid on the candles) and the
// indicators the view turns on, RSI in a pane of its own. Indicators are recomputed from all
// loaded candles on every change, so a correction of any bar is reflected wherever it reaches.

import * as maths from './indicators.js';

const { CandlestickSeries, HistogramSeries, LineSeries, LineStyle } = window.LightweightCharts;

/** Relative pane heights: candles, volume, RSI. */
const STRETCH = { price: 4, volume: 1, rsi: 1.4 };
const RSI_BOUNDS = [30, 70];

const closes = (rows) => rows.map((r) => r[4]);
const formatOf = (decimals) => ({ type: 'price', precision: decimals, minMove: 10 ** -decimals });

/** The lines `view` turns on; `values(rows, memo)` computes one, sharing work through `memo`. */
function lineSpecs(view) {
  const specs = [];
  const bands = (rows, memo) => (memo.bb ??= maths.bollinger(closes(rows)));
  if (view.sma) {
    specs.push({ id: 'sma', label: `SMA ${view.sma}`, color: '--sma', values: (rows) => maths.sma(closes(rows), view.sma) });
  }
  if (view.ema) {
    specs.push({ id: 'ema', label: `EMA ${view.ema}`, color: '--ema', values: (rows) => maths.ema(closes(rows), view.ema) });
  }
  if (view.vwap) specs.push({ id: 'vwap', label: 'VWAP', color: '--vwap', values: (rows) => maths.vwap(rows) });
  if (view.bb) {
    for (const [band, name] of [['upper', 'upper'], ['middle', 'basis'], ['lower', 'lower']]) {
      specs.push({
        id: `bb-${band}`,
        label: `BB ${name}`,
        color: '--bb',
        dashed: band === 'middle',
        band: true,
        width: 1,
        values: (rows, memo) => bands(rows, memo)[band],
      });
    }
  }
  if (view.rsi) {
    specs.push({
      id: 'rsi', label: `RSI ${maths.RSI_PERIOD}`, color: '--rsi', pane: 'rsi', decimals: 2, values: (rows) => maths.rsi(closes(rows)),
    });
  }
  return specs;
}

export function createPlots(chart) {
  const candles = chart.addSeries(CandlestickSeries, {});
  let volume = null;
  let lines = []; // { spec, series, values }
  let colors = {}; // CSS variable name → colour
  let priceFormat = null;

  const toBar = ([time, open, high, low, close]) => ({ time, open, high, low, close });
  const toVolume = ([time, open, , , close, value]) => ({
    time, value, color: close >= open ? colors['--up-volume'] : colors['--down-volume'],
  });
  const toPoint = (rows, values, i) => (values[i] === null ? { time: rows[i][0] } : { time: rows[i][0], value: values[i] });

  /** Rebuilds every series but the candles for `view`; call `draw` next. */
  function setView(view) {
    if (volume) chart.removeSeries(volume);
    for (const line of lines) chart.removeSeries(line.series);
    const ownPane = view.volume === 'pane';
    volume = chart.addSeries(HistogramSeries, {
      priceScaleId: ownPane ? 'right' : 'volume',
      priceFormat: { type: 'volume' },
      lastValueVisible: false,
      priceLineVisible: false,
      title: '',
    }, ownPane ? 1 : 0);
    if (!ownPane) volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: ownPane ? 0.04 : 0.26 } });
    const rsiPane = ownPane ? 2 : 1;
    lines = lineSpecs(view).map((spec) => {
      const series = chart.addSeries(LineSeries, {
        lineWidth: spec.width ?? 2,
        lineStyle: spec.dashed ? LineStyle.Dashed : LineStyle.Solid,
        // Three more labels on the price axis would only crowd it; the legend has the bands.
        title: spec.band ? '' : spec.label,
        lastValueVisible: !spec.band,
        priceLineVisible: false,
        crosshairMarkerVisible: false,
        priceFormat: spec.decimals ? formatOf(spec.decimals) : priceFormat ?? undefined,
        ...(spec.pane === 'rsi' ? { autoscaleInfoProvider: () => ({ priceRange: { minValue: 0, maxValue: 100 } }) } : {}),
      }, spec.pane === 'rsi' ? rsiPane : 0);
      if (spec.pane === 'rsi') {
        for (const price of RSI_BOUNDS) series.createPriceLine({ price, lineStyle: LineStyle.Dotted, lineWidth: 1, axisLabelVisible: false });
      }
      return { spec, series, values: [] };
    });
    const panes = chart.panes();
    panes[0]?.setStretchFactor(STRETCH.price);
    if (ownPane) panes[1]?.setStretchFactor(STRETCH.volume);
    if (view.rsi) panes[rsiPane]?.setStretchFactor(STRETCH.rsi);
    applyTheme(colors);
  }

  function applyTheme(next) {
    colors = next;
    const up = colors['--up'];
    const down = colors['--down'];
    candles.applyOptions({
      upColor: up, borderUpColor: up, wickUpColor: up, downColor: down, borderDownColor: down, wickDownColor: down,
    });
    for (const { spec, series } of lines) {
      series.applyOptions({ color: colors[spec.color] });
      for (const line of series.priceLines()) line.applyOptions({ color: colors['--muted'] });
    }
  }

  function compute(rows) {
    const memo = {};
    for (const line of lines) line.values = line.spec.values(rows, memo);
  }

  /** Replaces everything on screen with `rows` (ascending). */
  function draw(rows) {
    candles.setData(rows.map(toBar));
    volume.setData(rows.map(toVolume));
    compute(rows);
    for (const line of lines) line.series.setData(rows.map((_, i) => toPoint(rows, line.values, i)));
  }

  /** Redraws `rows[from..]` only: the newest bar changed or bars were added after it. */
  function drawTail(rows, from) {
    compute(rows);
    for (let i = from; i < rows.length; i++) {
      candles.update(toBar(rows[i]));
      volume.update(toVolume(rows[i]));
      for (const line of lines) line.series.update(toPoint(rows, line.values, i));
    }
  }

  /** Empties every series, so the next `draw` lays out the time axis afresh. */
  function clear() {
    for (const s of [candles, volume, ...lines.map((l) => l.series)]) s.setData([]);
  }

  /** The indicators' values at bar `i` of the rows last drawn. */
  const studiesAt = (i) => lines.map(({ spec, values }) => ({
    id: spec.id, label: spec.label, value: values[i] ?? null, decimals: spec.decimals,
  }));

  /** Prices with `decimals` digits on the candles and the lines drawn over them. */
  const setDecimals = (decimals) => {
    priceFormat = formatOf(decimals);
    candles.applyOptions({ priceFormat });
    for (const { spec, series } of lines) if (!spec.decimals) series.applyOptions({ priceFormat });
  };

  /** The indicator lines on the chart: id, label, series and the pane it is drawn in. */
  const studies = () => lines.map(({ spec, series }) => ({
    id: spec.id, label: spec.label, series, pane: series.getPane().paneIndex(),
  }));

  return {
    candles, setView, applyTheme, draw, drawTail, clear, studiesAt, studies, setDecimals,
  };
}
