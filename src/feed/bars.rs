//! The bars one channel holds in memory: the newest stored bars of a (symbol, interval), read
//! from the database, kept exact by re-reading what changed, and capped in number.

use std::collections::BTreeMap;

use crate::domain::Candle;

/// Every stored bar of one channel that starts at or after `from` (`None`: all of them): a
/// suffix of the stored history, so the newest `n` bars it holds are the newest `n` stored.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Bars {
    from: Option<i64>,
    bars: BTreeMap<i64, Candle>,
}

/// What changed in one channel: bars to send and buckets that no longer have any.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub candles: Vec<Candle>,
    pub removed: Vec<i64>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.candles.is_empty() && self.removed.is_empty()
    }
}

impl Bars {
    /// The newest bars as read with a limit of `asked`: fewer than asked means all of them.
    pub fn loaded(candles: Vec<Candle>, asked: usize) -> Self {
        let bars: BTreeMap<i64, Candle> = candles.into_iter().map(|c| (c.t, c)).collect();
        let from = if bars.len() < asked {
            None
        } else {
            bars.keys().next().copied()
        };
        Self { from, bars }
    }

    /// Where the held bars start (`None`: all stored history is held).
    pub fn from(&self) -> Option<i64> {
        self.from
    }

    /// Whether the bar starting at `t` is one this channel holds (or would, if it existed).
    pub fn covers(&self, t: i64) -> bool {
        self.from.is_none_or(|f| t >= f)
    }

    pub fn len(&self) -> usize {
        self.bars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bars.is_empty()
    }

    /// The newest `limit` bars, or (`None`) every bar from `window_start` on, ascending; `None`
    /// when this channel does not hold them all (it must be read again, deeper).
    pub fn newest(&self, limit: Option<usize>, window_start: i64) -> Option<Vec<Candle>> {
        match limit {
            Some(n) if n <= self.bars.len() || self.from.is_none() => {
                let skip = self.bars.len().saturating_sub(n);
                Some(self.bars.values().skip(skip).copied().collect())
            }
            None if self.covers(window_start) => {
                Some(self.bars.range(window_start..).map(|(_, c)| *c).collect())
            }
            _ => None,
        }
    }

    /// The bars of the range `[start, end)` as just read from the database (`read`, any order):
    /// returns what differs from what was held. Bars outside the held suffix are sent but not
    /// kept (the suffix would get holes).
    pub fn replace_range(&mut self, start: i64, end: i64, read: &[Candle]) -> Delta {
        let mut delta = Delta::default();
        let fresh: BTreeMap<i64, Candle> = read.iter().map(|c| (c.t, *c)).collect();
        let gone: Vec<i64> = self
            .bars
            .range(start..end)
            .filter(|(t, _)| !fresh.contains_key(t))
            .map(|(t, _)| *t)
            .collect();
        for t in gone {
            self.bars.remove(&t);
            delta.removed.push(t);
        }
        for (t, c) in fresh {
            if self.set(t, Some(c)) {
                delta.candles.push(c);
            }
        }
        delta
    }

    /// Sets (or, with `None`, removes) the bar at `t`; returns whether a viewer must hear of it.
    pub fn set(&mut self, t: i64, candle: Option<Candle>) -> bool {
        match candle {
            Some(c) if self.covers(t) => self.bars.insert(t, c) != Some(c),
            Some(_) => true,
            None => self.bars.remove(&t).is_some(),
        }
    }

    /// The differences from `old` to `self` (a reload), within what both hold.
    pub fn delta_from(&self, old: &Bars) -> Delta {
        let mut delta = Delta::default();
        for (t, c) in &self.bars {
            if old.bars.get(t) != Some(c) {
                delta.candles.push(*c);
            }
        }
        for t in old.bars.keys() {
            if self.covers(*t) && !self.bars.contains_key(t) {
                delta.removed.push(*t);
            }
        }
        delta
    }

    /// The bars of `buckets` as held now, as one delta (a bucket without a bar is removed);
    /// `None` when one of them is older than what this channel holds.
    pub fn at(&self, buckets: impl IntoIterator<Item = i64>) -> Option<Delta> {
        let mut delta = Delta::default();
        for t in buckets {
            if !self.covers(t) {
                return None;
            }
            match self.bars.get(&t) {
                Some(c) => delta.candles.push(*c),
                None => delta.removed.push(t),
            }
        }
        Some(delta)
    }

    /// Keeps the newest `cap` bars.
    pub fn trim(&mut self, cap: usize) {
        while self.bars.len() > cap {
            self.bars.pop_first();
            self.from = self.bars.keys().next().copied();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(t: i64, price: f64) -> Candle {
        Candle {
            t,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: 1.0,
        }
    }

    #[test]
    fn a_channel_read_whole_serves_any_limit_and_one_read_in_part_only_what_it_holds() {
        let whole = Bars::loaded(vec![c(60, 1.0), c(0, 1.0)], 10);
        assert_eq!(whole.newest(Some(5), 0).map(|b| b.len()), Some(2));
        let part = Bars::loaded(vec![c(120, 1.0), c(60, 1.0)], 2);
        assert_eq!(part.newest(Some(2), 0).map(|b| b[0].t), Some(60));
        assert_eq!(part.newest(Some(3), 0), None, "the third is not held");
        assert_eq!(part.newest(None, 60).map(|b| b.len()), Some(2));
        assert_eq!(
            part.newest(None, 0),
            None,
            "the window reaches further back"
        );
    }

    #[test]
    fn a_range_read_again_reports_changed_and_removed_bars() {
        let mut bars = Bars::loaded(vec![c(0, 1.0), c(60, 1.0), c(120, 1.0)], 3);
        let delta = bars.replace_range(60, 180, &[c(120, 2.0), c(180, 1.0)]);
        assert_eq!(delta.removed, vec![60]);
        assert_eq!(delta.candles, vec![c(120, 2.0), c(180, 1.0)]);
        assert!(bars.replace_range(60, 180, &[c(120, 2.0)]).is_empty());
    }

    #[test]
    fn bars_older_than_the_held_ones_are_sent_but_not_kept() {
        let mut bars = Bars::loaded(vec![c(120, 1.0), c(60, 1.0)], 2);
        let delta = bars.replace_range(0, 60, &[c(0, 5.0)]);
        assert_eq!(delta.candles, vec![c(0, 5.0)]);
        assert_eq!(bars.len(), 2);
        assert_eq!(bars.newest(Some(3), 0), None);
    }

    #[test]
    fn trimming_keeps_the_newest_bars_and_forgets_that_the_rest_was_held() {
        let mut bars = Bars::loaded(vec![c(0, 1.0), c(60, 1.0), c(120, 1.0)], 10);
        bars.trim(2);
        assert_eq!(bars.from(), Some(60));
        assert!(!bars.covers(0));
    }
}
