// Export: the chart as a PNG image, and the candles in view as CSV from `/api/candles.csv`.

/** `BTC-USD-1m-2024-07-03T0625Z`: a file name without characters file systems refuse. */
export function fileStem(symbol, interval, t) {
  const stamp = new Date(t * 1000).toISOString().slice(0, 16).replace(':', '');
  return `${symbol}-${interval}-${stamp}Z`.replace(/[^A-Za-z0-9._-]+/g, '-');
}

function download(href, name) {
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  a.click();
}

/** Saves what the chart shows (without the crosshair) as `<stem>.png`. */
export function savePng(chart, stem) {
  const canvas = chart.takeScreenshot(true, false);
  canvas.toBlob((blob) => {
    if (!blob) return;
    const url = URL.createObjectURL(blob);
    download(url, `${stem}.png`);
    // The download has read the blob once the click has been handled.
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }, 'image/png');
}

/**
 * The CSV of the bars from `from` to `to` (bar start times, both shown): `/api/candles.csv`
 * takes `to` as exclusive, so it gets the end of the last bar.
 */
export function csvUrl(symbol, interval, seconds, from, to) {
  const params = new URLSearchParams({
    symbol,
    interval,
    from: new Date(from * 1000).toISOString(),
    to: new Date((to + seconds) * 1000).toISOString(),
    limit: '200000',
  });
  return `/api/candles.csv?${params}`;
}

export function saveCsv(symbol, interval, seconds, range, stem) {
  download(csvUrl(symbol, interval, seconds, range.from, range.to), `${stem}.csv`);
}
