// The OHLCV read-out over the chart (`#legend`): the candle under the crosshair, or the newest
// one while the pointer is off the chart, with the indicators' values at that bar.

const EMPTY = '—';

export function createLegend(el) {
  const field = (name) => el.querySelector(`[data-field="${name}"]`);
  const cells = {
    time: field('time'),
    open: field('open'),
    high: field('high'),
    low: field('low'),
    close: field('close'),
    volume: field('volume'),
    change: field('change'),
    studies: field('studies'),
    corrected: field('corrected'),
  };

  /**
   * Shows `candle` ([t, o, h, l, c, v] or undefined) formatted by `fmt` ({ price, volume,
   * time }), with `studies` ([{ id, label, value }]) and how many corrections its bar has.
   */
  function show(candle, fmt, studies = [], corrections = 0) {
    if (!candle) {
      el.dataset.direction = 'flat';
      delete el.dataset.time;
      for (const name of ['time', 'open', 'high', 'low', 'close', 'volume', 'change']) cells[name].textContent = EMPTY;
      cells.studies.replaceChildren();
      cells.corrected.hidden = true;
      return;
    }
    const [t, open, high, low, close, volume] = candle;
    const diff = close - open;
    const pct = open ? (diff / open) * 100 : 0;
    const sign = diff > 0 ? '+' : diff < 0 ? '−' : '±';
    el.dataset.direction = diff > 0 ? 'up' : diff < 0 ? 'down' : 'flat';
    el.dataset.time = String(t);
    cells.time.textContent = fmt.time(t);
    cells.time.dateTime = new Date(t * 1000).toISOString();
    cells.open.textContent = fmt.price(open);
    cells.high.textContent = fmt.price(high);
    cells.low.textContent = fmt.price(low);
    cells.close.textContent = fmt.price(close);
    cells.volume.textContent = fmt.volume(volume);
    cells.change.textContent = `${sign}${fmt.price(Math.abs(diff))} (${sign}${Math.abs(pct).toFixed(2)}%)`;
    showStudies(studies, fmt);
    cells.corrected.hidden = corrections === 0;
    cells.corrected.textContent = corrections === 1 ? 'corrected' : `corrected ×${corrections}`;
  }

  function showStudies(studies, fmt) {
    // Reuse the spans while the set of indicators stays the same: this runs on every pointer move.
    if (cells.studies.children.length !== studies.length
        || studies.some((s, i) => cells.studies.children[i].dataset.indicator !== s.id)) {
      cells.studies.replaceChildren(...studies.map((s) => {
        const span = document.createElement('span');
        span.className = 'legend-study';
        span.dataset.indicator = s.id;
        span.append(`${s.label} `, document.createElement('b'));
        return span;
      }));
    }
    studies.forEach((s, i) => {
      const value = cells.studies.children[i].querySelector('b');
      value.textContent = s.value === null || s.value === undefined ? EMPTY : fmt.study(s);
    });
  }

  return { show };
}
