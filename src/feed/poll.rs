//! One poll's database work, run as a task beside the poller's loop: the journal's changes since
//! the last poll, the changed bars of every held channel read again at its interval (all of
//! them in one statement), then the channels to load. All in this order, in one task: a channel
//! loaded here was read after the journal position this poll returns, so the next poll (from
//! that position) brings every change its read may have missed.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::db::Flavour;
use crate::db::candles::{CandleRange, CandleRow, fetch_candles};
use crate::db::journal::{self, PollRequest, PollResult, Position, ResumeFrom};
use crate::db::rereads::{Reread, fetch_rereads};
use crate::domain::{Candle, Interval};

/// A channel: a symbol at an interval.
pub type ChannelKey = (String, Interval);

/// Changed buckets this many bars apart or closer are read again in one range.
const MERGE_GAP_BARS: i64 = 8;

/// A channel the poller holds bars of, and where they start (`None`: all stored history).
#[derive(Debug, Clone)]
pub struct Held {
    pub key: ChannelKey,
    pub from: Option<i64>,
}

/// What one poll reads.
#[derive(Debug, Clone)]
pub struct PollPlan {
    pub from: Option<Position>,
    /// Changed minutes from here on are listed one by one (the live window's start).
    pub since: DateTime<Utc>,
    /// Changed minutes before this are reported as one range (any symbol).
    pub old_before: DateTime<Utc>,
    pub held: Vec<Held>,
    /// Minutes `[from, to)` (Unix seconds) to read again in every held channel: a refresh of
    /// the aggregate made edits there visible.
    pub reread: Option<(i64, i64)>,
    /// Channels to load, with how many of their newest bars.
    pub load: Vec<(ChannelKey, usize)>,
    /// Reconnecting viewers' tokens: what each missed is read in the journal's snapshot.
    pub resumes: Vec<ResumeFrom>,
}

/// Bars `[start, end)` of one channel as read again.
#[derive(Debug, Clone)]
pub struct ReadRange {
    pub key: ChannelKey,
    pub start: i64,
    pub end: i64,
    pub candles: Vec<Candle>,
}

/// What a channel load read: its newest bars (ascending) and how many were asked for.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub key: ChannelKey,
    pub asked: usize,
    pub candles: Vec<Candle>,
}

#[derive(Debug, Default)]
pub struct PollOutcome {
    pub journal: PollResult,
    pub reread: Vec<ReadRange>,
    pub loaded: Vec<Loaded>,
}

/// Runs the poll `plan` describes.
#[tracing::instrument(name = "Poll", skip_all)]
pub async fn run(pool: &PgPool, flavour: Flavour, plan: &PollPlan) -> anyhow::Result<PollOutcome> {
    let symbols: Vec<String> = plan
        .held
        .iter()
        .map(|h| h.key.0.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let request = PollRequest {
        from: plan.from.as_ref(),
        symbols: Some(&symbols),
        load: &[],
        since: plan.since,
        old_before: Some(plan.old_before),
    };
    let journal = journal::poll_resuming(pool, flavour, &request, &plan.resumes).await?;
    let mut outcome = PollOutcome::default();
    if !journal.changes.reload {
        let ranges: Vec<Reread> = plan
            .held
            .iter()
            .flat_map(|held| {
                ranges_to_read(held, &journal, plan)
                    .into_iter()
                    .map(|(from, to)| Reread {
                        symbol: held.key.0.clone(),
                        interval: held.key.1,
                        from,
                        to,
                    })
            })
            .collect();
        let bars = fetch_rereads(pool, &ranges).await?;
        for (range, rows) in ranges.into_iter().zip(bars) {
            outcome.reread.push(ReadRange {
                key: (range.symbol, range.interval),
                start: range.from,
                end: range.to,
                candles: rows.iter().filter_map(candle).collect(),
            });
        }
    }
    for (key, asked) in &plan.load {
        let candles = read(pool, key, *asked).await?;
        outcome.loaded.push(Loaded {
            key: key.clone(),
            asked: *asked,
            candles,
        });
    }
    outcome.journal = journal;
    Ok(outcome)
}

/// The newest `limit` bars of `key`, ascending.
async fn read(pool: &PgPool, key: &ChannelKey, limit: usize) -> anyhow::Result<Vec<Candle>> {
    let (symbol, interval) = key;
    let range = CandleRange {
        symbol: symbol.clone(),
        interval: *interval,
        from: None,
        to: None,
        limit: (limit as i64).max(1),
    };
    let rows = fetch_candles(pool, &range).await?;
    let mut candles: Vec<Candle> = rows.iter().filter_map(candle).collect();
    candles.reverse();
    Ok(candles)
}

fn candle(row: &CandleRow) -> Option<Candle> {
    Some(Candle {
        t: row.bucket.timestamp(),
        open: row.open?,
        high: row.high?,
        low: row.low?,
        close: row.close?,
        volume: row.volume.unwrap_or(0.0),
    })
}

/// The bucket ranges `[start, end)` of one held channel to read again after `journal`.
fn ranges_to_read(held: &Held, journal: &PollResult, plan: &PollPlan) -> Vec<(i64, i64)> {
    let (symbol, interval) = &held.key;
    let secs = interval.seconds();
    let since = plan.since.timestamp();
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    if *interval != Interval::M1 {
        // At 1m the journal's own candles are the bars.
        ranges.extend(
            journal
                .changes
                .minutes
                .iter()
                .filter(|m| &m.symbol == symbol)
                .map(|m| {
                    let b = interval.bucket_of(m.t);
                    (b, b + secs)
                }),
        );
    }
    if let Some((first, last)) = journal.changes.old {
        // Changed minutes before the window are not listed one by one: read their span again
        // (at 1m only the part the journal does not list).
        let last = if *interval == Interval::M1 {
            last.min(since - 60)
        } else {
            last
        };
        if first <= last {
            ranges.push((interval.bucket_of(first), interval.bucket_of(last) + secs));
        }
    }
    if let Some((from, to)) = plan.reread {
        // At 1m the journal's own candles are exact within the window (a re-read there could
        // bring back a value an edit after the refresh has already replaced): only the part
        // before the window is read again.
        let to = if *interval == Interval::M1 {
            to.min(since)
        } else {
            to
        };
        if from < to {
            ranges.push((interval.bucket_of(from), interval.bucket_of(to - 1) + secs));
        }
    }
    let clipped = ranges.into_iter().filter_map(|(s, e)| {
        let s = held.from.map_or(s, |f| s.max(interval.bucket_of(f)));
        (s < e).then_some((s, e))
    });
    merge(clipped.collect(), MERGE_GAP_BARS * secs)
}

/// Sorts `ranges` and merges those that overlap or lie within `gap` of each other.
fn merge(mut ranges: Vec<(i64, i64)>, gap: i64) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 + gap => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::journal::{Changes, MinuteChange};

    fn plan(since: i64) -> PollPlan {
        PollPlan {
            from: None,
            since: DateTime::from_timestamp(since, 0).unwrap_or_default(),
            old_before: DateTime::from_timestamp(since, 0).unwrap_or_default(),
            held: Vec::new(),
            reread: None,
            load: Vec::new(),
            resumes: Vec::new(),
        }
    }

    fn changed(minutes: &[i64], old: Option<(i64, i64)>) -> PollResult {
        PollResult {
            changes: Changes {
                minutes: minutes
                    .iter()
                    .map(|t| MinuteChange {
                        symbol: "A".into(),
                        t: *t,
                        candle: None,
                    })
                    .collect(),
                reload: false,
                old,
            },
            ..PollResult::default()
        }
    }

    #[test]
    fn changed_minutes_are_read_again_as_whole_buckets_merged_when_close() {
        let held = Held {
            key: ("A".into(), Interval::M5),
            from: None,
        };
        let journal = changed(&[3_600_060, 3_600_120, 3_600_600, 7_200_000], None);
        assert_eq!(
            ranges_to_read(&held, &journal, &plan(0)),
            vec![(3_600_000, 3_600_900), (7_200_000, 7_200_300)]
        );
    }

    #[test]
    fn old_changes_are_read_again_within_what_the_channel_holds() {
        let held = Held {
            key: ("A".into(), Interval::D1),
            from: Some(86_400 * 10),
        };
        let journal = changed(&[], Some((60, 86_400 * 20 + 60)));
        assert_eq!(
            ranges_to_read(&held, &journal, &plan(86_400 * 30)),
            vec![(86_400 * 10, 86_400 * 21)]
        );
        let minutes = Held {
            key: ("A".into(), Interval::M1),
            from: None,
        };
        let journal = changed(&[600], Some((60, 1_200)));
        assert_eq!(
            ranges_to_read(&minutes, &journal, &plan(600)),
            vec![(60, 600)],
            "at 1m the listed minutes come from the journal"
        );
    }

    #[test]
    fn after_a_refresh_1m_reads_again_only_what_the_window_does_not_list() {
        let mut after_refresh = plan(600);
        after_refresh.reread = Some((60, 1_200));
        let minutes = Held {
            key: ("A".into(), Interval::M1),
            from: None,
        };
        assert_eq!(
            ranges_to_read(&minutes, &changed(&[], None), &after_refresh),
            vec![(60, 600)]
        );
        let hours = Held {
            key: ("A".into(), Interval::H1),
            from: None,
        };
        assert_eq!(
            ranges_to_read(&hours, &changed(&[], None), &after_refresh),
            vec![(0, 3_600)]
        );
    }
}
