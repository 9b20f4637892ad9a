//! The in-memory window of 1m candles per symbol, and the roll-ups to wider intervals.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::domain::{Candle, Interval, roll_up};

/// 1m candles by bucket start, per symbol.
#[derive(Debug, Default)]
pub struct CandleWindow {
    symbols: HashMap<String, BTreeMap<i64, Candle>>,
}

/// What changed at one interval of one symbol.
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

impl CandleWindow {
    /// Holds exactly `candles` (ascending or not) for `symbol`, loaded or not before; returns
    /// the minutes that differ from what was held.
    pub fn load(&mut self, symbol: &str, candles: Vec<Candle>) -> BTreeSet<i64> {
        let fresh: BTreeMap<i64, Candle> = candles.into_iter().map(|c| (c.t, c)).collect();
        let old = self
            .symbols
            .insert(symbol.to_owned(), fresh)
            .unwrap_or_default();
        let new = &self.symbols[symbol];
        old.keys()
            .chain(new.keys())
            .filter(|t| old.get(t) != new.get(t))
            .copied()
            .collect()
    }

    /// Forgets `symbol` (nobody watches it any more).
    pub fn unload(&mut self, symbol: &str) {
        self.symbols.remove(symbol);
    }

    /// Whether `symbol`'s window is held (possibly empty: it has no candles yet).
    pub fn is_loaded(&self, symbol: &str) -> bool {
        self.symbols.contains_key(symbol)
    }

    /// The loaded symbols.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.symbols.keys().map(String::as_str)
    }

    pub fn candle_count(&self) -> usize {
        self.symbols.values().map(BTreeMap::len).sum()
    }

    /// Sets (or, with `None`, removes) one minute of a loaded symbol. Returns whether anything
    /// changed; a symbol that is not loaded is left alone.
    pub fn apply(&mut self, symbol: &str, t: i64, candle: Option<Candle>) -> bool {
        let Some(m) = self.symbols.get_mut(symbol) else {
            return false;
        };
        match candle {
            Some(c) => m.insert(t, c) != Some(c),
            None => m.remove(&t).is_some(),
        }
    }

    /// Drops candles before `oldest` (the window slid past them); returns the symbols that lost some.
    pub fn trim(&mut self, oldest: i64) -> Vec<String> {
        let mut trimmed = Vec::new();
        for (symbol, m) in &mut self.symbols {
            if m.first_key_value().is_some_and(|(t, _)| *t < oldest) {
                *m = m.split_off(&oldest);
                trimmed.push(symbol.clone());
            }
        }
        trimmed
    }

    /// Every candle of `symbol` at `interval`, ascending.
    pub fn series(&self, symbol: &str, interval: Interval) -> Vec<Candle> {
        match self.symbols.get(symbol) {
            Some(m) => roll_up(m.values(), interval),
            None => Vec::new(),
        }
    }

    /// The candle of the `interval` bucket starting at `b`, rolled up from 1m.
    fn rolled(&self, symbol: &str, interval: Interval, b: i64) -> Option<Candle> {
        let m = self.symbols.get(symbol)?;
        roll_up(m.range(b..b + interval.seconds()).map(|(_, c)| c), interval).pop()
    }

    /// The delta at `interval` for the changed 1m buckets `minutes` (already applied).
    pub fn delta(&self, symbol: &str, interval: Interval, minutes: &BTreeSet<i64>) -> Delta {
        let buckets: BTreeSet<i64> = minutes.iter().map(|t| interval.bucket_of(*t)).collect();
        let mut d = Delta::default();
        for b in buckets {
            match self.rolled(symbol, interval, b) {
                Some(c) => d.candles.push(c),
                None => d.removed.push(b),
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(t: i64, o: f64, h: f64, l: f64, cl: f64, v: f64) -> Candle {
        Candle {
            t,
            open: o,
            high: h,
            low: l,
            close: cl,
            volume: v,
        }
    }

    fn window(symbol: &str, candles: Vec<Candle>) -> CandleWindow {
        let mut w = CandleWindow::default();
        w.load(symbol, candles);
        w
    }

    #[test]
    fn five_minute_candles_roll_up_from_one_minute_ones() {
        let w = window(
            "A",
            vec![
                c(0, 10.0, 12.0, 9.0, 11.0, 1.0),
                c(60, 11.0, 15.0, 10.0, 14.0, 2.0),
                c(300, 14.0, 14.0, 13.0, 13.5, 0.5),
            ],
        );
        assert_eq!(
            w.series("A", Interval::M5),
            vec![
                c(0, 10.0, 15.0, 9.0, 14.0, 3.0),
                c(300, 14.0, 14.0, 13.0, 13.5, 0.5)
            ]
        );
    }

    #[test]
    fn removing_the_last_minute_of_a_bucket_reports_it_removed() {
        let mut w = window("A", vec![c(60, 1.0, 1.0, 1.0, 1.0, 1.0)]);
        assert!(w.apply("A", 60, None));
        let d = w.delta("A", Interval::M5, &BTreeSet::from([60]));
        assert_eq!(d.removed, vec![0]);
        assert!(d.candles.is_empty());
        assert!(w.is_loaded("A"), "an empty window is still loaded");
    }

    #[test]
    fn an_unchanged_candle_is_not_a_change() {
        let mut w = window("A", Vec::new());
        assert!(w.apply("A", 0, Some(c(0, 1.0, 1.0, 1.0, 1.0, 1.0))));
        assert!(!w.apply("A", 0, Some(c(0, 1.0, 1.0, 1.0, 1.0, 1.0))));
    }

    #[test]
    fn changes_to_a_symbol_that_is_not_loaded_are_left_alone() {
        let mut w = CandleWindow::default();
        assert!(!w.apply("A", 0, Some(c(0, 1.0, 1.0, 1.0, 1.0, 1.0))));
        assert!(!w.is_loaded("A"));
    }

    #[test]
    fn loading_again_reports_the_minutes_that_differ() {
        let mut w = window(
            "A",
            vec![
                c(0, 1.0, 1.0, 1.0, 1.0, 1.0),
                c(60, 1.0, 1.0, 1.0, 1.0, 1.0),
            ],
        );
        let changed = w.load(
            "A",
            vec![
                c(60, 2.0, 2.0, 2.0, 2.0, 1.0),
                c(120, 1.0, 1.0, 1.0, 1.0, 1.0),
            ],
        );
        assert_eq!(changed, BTreeSet::from([0, 60, 120]));
    }

    #[test]
    fn trimming_drops_only_old_minutes() {
        let mut w = window(
            "A",
            vec![
                c(0, 1.0, 1.0, 1.0, 1.0, 1.0),
                c(120, 1.0, 1.0, 1.0, 1.0, 1.0),
            ],
        );
        assert_eq!(w.trim(60), vec!["A".to_owned()]);
        assert_eq!(w.series("A", Interval::M1).len(), 1);
        assert!(w.trim(60).is_empty(), "nothing left to trim");
    }
}
