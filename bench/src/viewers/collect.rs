//! From receipts to the numbers: each frame's first receipt over all viewers, the frames that
//! count (first received inside the window), and per viewer the spread of its receipts from
//! those first ones and the frames it missed.

use std::collections::{HashMap, HashSet};

use hdrhistogram::Histogram;

use super::protocol::{JoinSummary, Receipt, WorkerResult};
use super::viewer::{Join, Log};

/// How many distinct error messages a worker reports.
const MAX_ERRORS: usize = 10;

/// Adds `receipts` to `first`, keeping the earliest receipt of each (server, hash).
pub fn keep_first(
    first: &mut HashMap<(u16, u64), u64>,
    receipts: impl IntoIterator<Item = Receipt>,
) {
    for (server, hash, t) in receipts {
        let e = first.entry((server, hash)).or_insert(t);
        *e = (*e).min(t);
    }
}

/// The first receipt in this worker of every frame its viewers got.
pub fn first_receipts<'a>(logs: impl IntoIterator<Item = &'a Log>) -> Vec<Receipt> {
    let mut first = HashMap::new();
    for log in logs {
        keep_first(
            &mut first,
            log.frames.iter().map(|(hash, t)| (log.server, *hash, *t)),
        );
    }
    first.into_iter().map(|((s, h), t)| (s, h, t)).collect()
}

/// The frames first received within `[start, end]`: the ones every viewer is judged on.
pub fn in_window(first: &HashMap<(u16, u64), u64>, start: u64, end: u64) -> Vec<Receipt> {
    first
        .iter()
        .filter(|(_, t)| **t >= start && **t <= end)
        .map(|((s, h), t)| (*s, *h, *t))
        .collect()
}

/// One worker's viewers judged against `frames`, each (server, hash) with a reference time: its
/// first receipt over all workers (the spread), or, when latency is measured, when each tick
/// the frame first showed was acknowledged (a frame may be listed once per such tick). Reports
/// who was held, dropped or failed, every delivery's time from each of its frame's references,
/// each viewer's own p99 of those, and the frames each viewer missed.
pub fn judge<'a>(logs: impl IntoIterator<Item = &'a Log>, frames: Vec<Receipt>) -> WorkerResult {
    let mut judged: HashMap<(u16, u64), Vec<u64>> = HashMap::new();
    for (s, h, t) in frames {
        judged.entry((s, h)).or_default().push(t);
    }
    let mut per_server: HashMap<u16, u64> = HashMap::new();
    for (s, _) in judged.keys() {
        *per_server.entry(*s).or_default() += 1;
    }
    let mut result = WorkerResult::default();
    let mut hist = new_hist();
    let mut viewer_p99 = new_hist();
    let mut own: Vec<u64> = Vec::new();
    for log in logs {
        result.retries += u64::from(log.retries);
        if let Some(why) = log.retry_reason.as_ref().map(|w| format!("(retried) {w}")) {
            note_error(&mut result.errors, &why);
        }
        if let Some(e) = &log.failed {
            result.failed += 1;
            note_error(&mut result.errors, e);
            continue;
        }
        if let Some(why) = &log.dropped {
            result.dropped += 1;
            note_error(&mut result.errors, why);
        } else if log.connected {
            result.held += 1;
        }
        result.resyncs += log.snapshots.saturating_sub(1);
        let mut seen = HashSet::new();
        own.clear();
        for (hash, t) in &log.frames {
            if let Some(references) = judged.get(&(log.server, *hash))
                && seen.insert(*hash)
            {
                own.extend(references.iter().map(|r| t.saturating_sub(*r) / 1_000));
            }
        }
        for us in &own {
            hist.record(*us).ok();
        }
        if !own.is_empty() {
            own.sort_unstable();
            // Nearest rank.
            let rank = (own.len() * 99).div_ceil(100).max(1);
            viewer_p99.record(own[rank - 1]).ok();
        }
        result.deliveries += seen.len() as u64;
        let missed = per_server
            .get(&log.server)
            .copied()
            .unwrap_or(0)
            .saturating_sub(seen.len() as u64);
        result.missed += missed;
        result.max_missed = result.max_missed.max(missed);
        if missed > 0 {
            result.viewers_missing += 1;
        }
    }
    result.spread_us = pairs(&hist);
    result.viewer_p99_us = pairs(&viewer_p99);
    result
}

/// How `joins` went, summed up (bytes, the span from the first attempt to the last snapshot,
/// and the histogram of each viewer's time to its snapshot).
pub fn join_summary(joins: &[Join]) -> JoinSummary {
    let mut hist = new_hist();
    for j in joins {
        hist.record(j.snapshot_ns.saturating_sub(j.first_attempt_ns) / 1_000)
            .ok();
    }
    JoinSummary {
        joined: joins.len(),
        first_attempt_ns: joins.iter().map(|j| j.first_attempt_ns).min().unwrap_or(0),
        last_snapshot_ns: joins.iter().map(|j| j.snapshot_ns).max().unwrap_or(0),
        bytes: joins.iter().map(|j| j.bytes).sum(),
        join_us: pairs(&hist),
    }
}

/// Several workers' joins in one: the earliest attempt, the latest snapshot, the bytes and the
/// merged histogram (microseconds).
pub fn merge_joins<'a>(
    joins: impl IntoIterator<Item = &'a JoinSummary>,
) -> (JoinSummary, Histogram<u64>) {
    let mut hist = new_hist();
    let mut all = JoinSummary::default();
    for j in joins {
        if j.joined == 0 {
            continue;
        }
        all.first_attempt_ns = match all.first_attempt_ns {
            0 => j.first_attempt_ns,
            t => t.min(j.first_attempt_ns),
        };
        all.last_snapshot_ns = all.last_snapshot_ns.max(j.last_snapshot_ns);
        all.joined += j.joined;
        all.bytes += j.bytes;
        for (v, n) in &j.join_us {
            hist.record_n(*v, *n).ok();
        }
    }
    (all, hist)
}

fn pairs(hist: &Histogram<u64>) -> Vec<(u64, u64)> {
    hist.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn note_error(errors: &mut Vec<String>, e: &str) {
    if errors.len() < MAX_ERRORS && !errors.iter().any(|known| known == e) {
        errors.push(e.to_owned());
    }
}

/// The spread histograms of all workers in one (microseconds).
pub fn spread(results: &[WorkerResult]) -> Histogram<u64> {
    merged(results.iter().map(|r| &r.spread_us))
}

/// Every viewer's own p99 over all workers, in one histogram (microseconds).
pub fn viewer_p99(results: &[WorkerResult]) -> Histogram<u64> {
    merged(results.iter().map(|r| &r.viewer_p99_us))
}

fn merged<'a>(all: impl IntoIterator<Item = &'a Vec<(u64, u64)>>) -> Histogram<u64> {
    let mut hist = new_hist();
    for pairs in all {
        for (v, n) in pairs {
            hist.record_n(*v, *n).ok();
        }
    }
    hist
}

fn new_hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures are valid")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn held(server: u16, frames: &[(u64, u64)]) -> Log {
        Log {
            server,
            connected: true,
            snapshots: 1,
            frames: frames.to_vec(),
            ..Log::default()
        }
    }

    #[test]
    fn the_first_receipt_of_a_frame_is_the_earliest_over_all_viewers() {
        let logs = [held(0, &[(7, 300), (8, 900)]), held(0, &[(7, 100)])];
        let mut first = HashMap::new();
        keep_first(&mut first, first_receipts(&logs));
        keep_first(&mut first, [(0, 7, 200), (1, 7, 50)]);
        assert_eq!(first.get(&(0, 7)), Some(&100));
        assert_eq!(first.get(&(0, 8)), Some(&900));
        assert_eq!(first.get(&(1, 7)), Some(&50), "servers are kept apart");
        let mut counted = in_window(&first, 60, 500);
        counted.sort();
        assert_eq!(counted, vec![(0, 7, 100)]);
    }

    #[test]
    fn a_viewer_is_judged_on_every_frame_its_server_sent_in_the_window() {
        let logs = [
            held(0, &[(7, 1_000_000), (8, 5_000_000)]),
            held(0, &[(7, 3_000_000)]),
            held(1, &[(7, 2_000_000)]),
        ];
        let r = judge(&logs, vec![(0, 7, 1_000_000), (0, 8, 5_000_000)]);
        assert_eq!(r.held, 3);
        assert_eq!(r.deliveries, 3, "frame 7 of server 1 is not judged");
        assert_eq!(r.missed, 1);
        assert_eq!((r.viewers_missing, r.max_missed), (1, 1));
        let spread = spread(std::slice::from_ref(&r));
        assert_eq!(spread.len(), 3);
        assert_eq!(spread.max(), 2_000, "2 ms after the first receipt, in µs");
    }

    #[test]
    fn a_frame_with_several_references_times_each_and_counts_once() {
        // Frame 7 showed two ticks, acknowledged at 1 ms and 2 ms; frame 8 one, at 5 ms.
        let refs = vec![(0, 7, 1_000_000), (0, 7, 2_000_000), (0, 8, 5_000_000)];
        let logs = [
            held(0, &[(7, 3_000_000), (8, 6_000_000)]),
            held(0, &[(7, 12_000_000)]),
        ];
        let r = judge(&logs, refs);
        assert_eq!(r.deliveries, 3, "frames, not ticks");
        assert_eq!(r.missed, 1, "the second viewer missed frame 8");
        let all = spread(std::slice::from_ref(&r));
        assert_eq!(all.len(), 5, "one time per tick each viewer got");
        assert!(all.equivalent(all.max(), 11_000), "{}", all.max());
        let own = viewer_p99(std::slice::from_ref(&r));
        assert_eq!(own.len(), 2, "one p99 per viewer");
        assert!(own.equivalent(own.min(), 2_000), "{}", own.min());
        assert!(own.equivalent(own.max(), 11_000), "{}", own.max());
    }

    #[test]
    fn joins_merge_into_the_earliest_attempt_the_latest_snapshot_and_all_bytes() {
        let a = join_summary(&[
            Join {
                first_attempt_ns: 1_000_000,
                snapshot_ns: 3_000_000,
                bytes: 100,
            },
            Join {
                first_attempt_ns: 2_000_000,
                snapshot_ns: 9_000_000,
                bytes: 50,
            },
        ]);
        let b = join_summary(&[Join {
            first_attempt_ns: 500_000,
            snapshot_ns: 1_500_000,
            bytes: 10,
        }]);
        let (all, hist) = merge_joins([&a, &JoinSummary::default(), &b]);
        assert_eq!(all.joined, 3);
        assert_eq!(
            (all.first_attempt_ns, all.last_snapshot_ns),
            (500_000, 9_000_000)
        );
        assert_eq!(all.bytes, 160);
        assert_eq!(hist.len(), 3);
        // 3 significant figures: the histogram's max is the top of 7,000's bucket.
        assert!(
            hist.equivalent(hist.max(), 7_000),
            "7 ms from attempt to snapshot, in µs: {}",
            hist.max()
        );
    }

    #[test]
    fn failed_and_dropped_viewers_are_counted_apart_with_their_reasons() {
        let failed = Log {
            failed: Some("refused".into()),
            ..Log::default()
        };
        let dropped = Log {
            dropped: Some("reset".into()),
            ..held(0, &[])
        };
        let r = judge(&[failed.clone(), failed, dropped], Vec::new());
        assert_eq!((r.held, r.failed, r.dropped), (0, 2, 1));
        assert_eq!(r.errors, vec!["refused".to_owned(), "reset".to_owned()]);
    }
}
