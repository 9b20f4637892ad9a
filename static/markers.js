// Correction markers: bars whose minutes were changed after the fact, from the audit trail
// (`GET /api/corrections`), with a tooltip that says what changed and when.

/** Changes listed in one tooltip; the rest are counted. */
const TIP_CHANGES = 4;

/**
 * `series` carries the markers; `tip` is the tooltip element; `fmt` formats prices, volumes
 * and times ({ price, volume, time, clock, zone }).
 */
export function createCorrections(series, tip, fmt) {
  const plugin = window.LightweightCharts.createSeriesMarkers(series, []);
  let byBar = new Map(); // bar time → [change]
  let shown = true;
  let color = '';
  let request = 0;

  /** Loads the corrections of `symbol` in [from, to) and marks the bars of `seconds` among `bars`. */
  async function load({ symbol, seconds, from, to }, bars) {
    const mine = ++request;
    const params = new URLSearchParams({
      symbol, from: new Date(from * 1000).toISOString(), to: new Date(to * 1000).toISOString(), limit: '10000',
    });
    let minutes;
    try {
      const res = await fetch(`/api/corrections?${params}`, { headers: { Accept: 'application/json' } });
      if (!res.ok) return;
      minutes = await res.json();
    } catch {
      return; // the markers stay as they were; the next snapshot tries again
    }
    // A newer request (another symbol, interval or refresh) owns the markers now.
    if (mine !== request || !Array.isArray(minutes)) return;
    const next = new Map();
    for (const { minute, changes } of minutes) {
      const t = Date.parse(minute) / 1000;
      const bar = Math.floor(t / seconds) * seconds;
      next.set(bar, [...(next.get(bar) ?? []), ...changes]);
    }
    byBar = next;
    mark(bars);
  }

  /** Puts a marker on every corrected bar that is on the chart (`bars` has `has(t)`). */
  function mark(bars) {
    const markers = shown
      ? [...byBar.keys()].filter((t) => bars.has(t)).sort((a, b) => a - b).map((time) => ({
        time, position: 'aboveBar', shape: 'circle', color, size: 0.8, id: String(time),
      }))
      : [];
    plugin.setMarkers(markers);
    if (!shown) hide();
  }

  function hide() {
    tip.hidden = true;
  }

  /** Follows the crosshair: a tooltip while the pointer is on a marker. */
  function hover(param) {
    const info = param.hoveredInfo;
    const changes = info?.objectKind === 'series-marker' ? byBar.get(Number(info.objectId)) : undefined;
    if (!shown || !changes || !param.point) {
      hide();
      return;
    }
    const lines = changes.slice(0, TIP_CHANGES).map((c) => describeChange(c, fmt));
    if (changes.length > TIP_CHANGES) lines.push(`and ${changes.length - TIP_CHANGES} more`);
    tip.replaceChildren(heading(changes.length), ...lines.map((text) => {
      const p = document.createElement('p');
      p.textContent = text;
      return p;
    }));
    tip.hidden = false;
    // Beside the pointer, kept inside the chart.
    const box = tip.parentElement.getBoundingClientRect();
    const x = Math.min(param.point.x + 12, box.width - tip.offsetWidth - 4);
    const y = Math.max(4, param.point.y - tip.offsetHeight - 12);
    tip.style.left = `${Math.max(4, x)}px`;
    tip.style.top = `${y}px`;
  }

  function heading(n) {
    const h = document.createElement('strong');
    h.textContent = n === 1 ? 'Corrected after the fact' : `Corrected after the fact (${n} changes)`;
    return h;
  }

  return {
    load,
    mark,
    hover,
    markers: () => plugin.markers(),
    /** How many changes bar `t` has (0 while markers are hidden). */
    count: (t) => (shown ? byBar.get(t)?.length ?? 0 : 0),
    setShown(on, bars) {
      shown = on;
      mark(bars);
    },
    setColor(next, bars) {
      color = next;
      mark(bars);
    },
    /** Forgets the markers of the previous symbol or interval. */
    reset() {
      request += 1;
      byBar = new Map();
      plugin.setMarkers([]);
      hide();
    },
  };
}

/**
 * One change from `/api/corrections` in words, e.g. `Jul 3, 2024, 09:00 UTC, api token: tick
 * at 06:25:13 price 61,000.00 → 60,500.00`; `fmt` formats as in `createCorrections`.
 */
export function describeChange(c, fmt) {
  const when = `${fmt.time(Date.parse(c.at) / 1000)} ${fmt.zone()}, ${c.by}`;
  const tick = `tick at ${fmt.clock(Date.parse(c.time) / 1000)}`;
  // Ticks written by other programs may lack a price or volume.
  const price = (v) => (typeof v?.price === 'number' ? fmt.price(v.price) : '—');
  const volume = (v) => (typeof v?.volume === 'number' ? fmt.volume(v.volume) : '—');
  const amounts = (v) => `price ${price(v)}, volume ${volume(v)}`;
  switch (c.action) {
    case 'update': {
      const parts = [];
      if (c.before?.price !== c.after?.price) parts.push(`price ${price(c.before)} → ${price(c.after)}`);
      if (c.before?.volume !== c.after?.volume) parts.push(`volume ${volume(c.before)} → ${volume(c.after)}`);
      return `${when}: ${tick} ${parts.join(', ') || 'rewritten unchanged'}`;
    }
    case 'delete': return `${when}: deleted the ${tick} (${amounts(c.before)})`;
    default: return `${when}: added a ${tick} (${amounts(c.after)})`;
  }
}
