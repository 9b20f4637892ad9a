// Time zones: UTC (the default) or the browser's local time, for the axis, crosshair and legend.
// Data times stay UTC seconds; only labels and the axis calendar follow the zone.

const ZONE_KEY = 'candlewick.timezone';

export function readZone() {
  try {
    return localStorage.getItem(ZONE_KEY) === 'local' ? 'local' : 'utc';
  } catch {
    return 'utc'; // storage can be disabled
  }
}

export function saveZone(zone) {
  try {
    localStorage.setItem(ZONE_KEY, zone);
  } catch {
    // not persisted; the toggle still works for this page
  }
}

function dateFormats(timeZone) {
  const f = (options) => new Intl.DateTimeFormat(undefined, { timeZone, ...options });
  const hm = { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
  return {
    full: f({ year: 'numeric', month: 'short', day: 'numeric', ...hm }),
    seconds: f({ ...hm, second: '2-digit' }),
    year: f({ year: 'numeric' }),
    month: f({ month: 'short' }),
    day: f({ day: 'numeric', month: 'short' }),
    time: f(hm),
  };
}

// Built once: Intl formatters are expensive and the axis formats many labels per frame.
const FORMATS = { utc: dateFormats('UTC'), local: dateFormats(undefined) };

/** `Jul 3, 2024, 06:25` in `zone`. */
export const formatTime = (zone, t) => FORMATS[zone].full.format(new Date(t * 1000));

/** `06:25:13` in `zone`. */
export const formatClock = (zone, t) => FORMATS[zone].seconds.format(new Date(t * 1000));

export const zoneName = (zone) => (zone === 'utc' ? 'UTC' : 'local time');

/** An axis label for the library's tick mark `type` (its `TickMarkType` enum is `types`). */
export function formatTickMark(zone, t, type, types) {
  const f = FORMATS[zone];
  const date = new Date(t * 1000);
  switch (type) {
    case types.Year: return f.year.format(date);
    case types.Month: return f.month.format(date);
    case types.DayOfMonth: return f.day.format(date);
    case types.TimeWithSeconds: return f.seconds.format(date);
    default: return f.time.format(date);
  }
}

/** The local wall-clock reading of `t`, written as if it were UTC seconds. */
const wallClock = (t) => t - new Date(t * 1000).getTimezoneOffset() * 60;

/**
 * The library's time scale, except that in local mode it picks which bars start a day, month or
 * year (its tick mark weights) on the local calendar: the library itself only knows UTC. The
 * weights come from the library's own rules applied to wall-clock times, so the only thing
 * changed is the calendar.
 */
export function zonedTimeScale(Base, zoneOf) {
  return class ZonedTimeScale extends Base {
    fillWeightsForPoints(points, start) {
      if (zoneOf() === 'utc' || points.length === 0) {
        super.fillWeightsForPoints(points, start);
        return;
      }
      // The previous point takes part: a weight compares each point with the one before it.
      const from = Math.max(0, start - 1);
      const shifted = [];
      for (let i = from; i < points.length; i++) {
        shifted.push({ time: this.convertHorzItemToInternal(wallClock(points[i].originalTime)), timeWeight: 0 });
      }
      super.fillWeightsForPoints(shifted, start - from);
      for (let i = start; i < points.length; i++) points[i].timeWeight = shifted[i - from].timeWeight;
    }
  };
}
