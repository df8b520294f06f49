//! How fast a copy goes and when it will be done, computed once on the server from the reports
//! themselves, so that every client shows the same numbers.
//!
//! - **Progress** of a COPY record is the larger of what it has read, `io_size` (the documented
//!   meaning of "io" for a COPY: READ), and what it has sent, `transferred_size` (all an executor
//!   may report); files alike. For an incremental run (deduplicated data: `transferred_size`
//!   below what was read) the estimate therefore follows the reading, which is what remains to
//!   be done. The same holds for a job's aggregate, whose unreported sums are 0.
//! - **Rate**: a moving average of the rate between consecutive reports, each report pulling it
//!   towards its own rate by `Δt / WINDOW` (all of it once `Δt` ≥ [`WINDOW`]), so ten seconds
//!   is its time constant: a steady copy reads its steady rate, and after a stall or a speed-up
//!   the rate has gone about two thirds of the way within ten seconds of reports. Kept
//!   in thousandths (milli-bytes and milli-files per second), in integers, so that equal reports
//!   give equal estimates on every replica.
//! - **ETA**: the time of the report plus what remains of the estimate at that rate; absent until
//!   there is a rate and at least 1% progress, and for records without an estimate.

use super::{PvcProgress, TransferStats};

/// The span the moving average forgets over, in µs.
pub const WINDOW: i64 = 10_000_000;

/// A record's (or a job's) rate, in thousandths of a unit per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    pub bytes_milli: i64,
    pub files_milli: i64,
}

impl Rate {
    pub fn bytes_per_second(self) -> i64 {
        (self.bytes_milli + 500) / 1000
    }

    pub fn files_per_second(self) -> i64 {
        (self.files_milli + 500) / 1000
    }
}

/// Bytes and files a COPY record (or a job's aggregate) has done: the larger of what was read
/// and what was sent.
pub fn done(stats: &TransferStats) -> (i64, i64) {
    let most = |a: Option<i64>, b: Option<i64>| a.unwrap_or(0).max(b.unwrap_or(0));
    (
        most(stats.io_size, stats.transferred_size),
        most(stats.io_number_of_files, stats.transferred_number_of_files),
    )
}

/// `previous` moved towards the rate between `before` (at `then`) and `after` (at `now`).
/// Progress that goes backwards (an executor that started its count again) starts the average
/// again from zero.
pub fn next_rate(
    previous: Option<Rate>,
    before: (i64, i64),
    then: i64,
    after: (i64, i64),
    now: i64,
) -> Option<Rate> {
    let dt = now - then;
    if dt <= 0 {
        return previous;
    }
    if after.0 < before.0 || after.1 < before.1 {
        return None;
    }
    let instant = |from: i64, to: i64| -> i64 {
        let milli = i128::from(to - from) * 1_000_000_000 / i128::from(dt);
        i64::try_from(milli).unwrap_or(i64::MAX)
    };
    let now_rate = Rate {
        bytes_milli: instant(before.0, after.0),
        files_milli: instant(before.1, after.1),
    };
    let Some(previous) = previous else {
        return Some(now_rate);
    };
    let pull = dt.min(WINDOW);
    let toward = |old: i64, new: i64| -> i64 {
        let moved = i128::from(new - old) * i128::from(pull) / i128::from(WINDOW);
        old.saturating_add(i64::try_from(moved).unwrap_or(0))
    };
    Some(Rate {
        bytes_milli: toward(previous.bytes_milli, now_rate.bytes_milli),
        files_milli: toward(previous.files_milli, now_rate.files_milli),
    })
}

/// When `remaining` of `estimated` bytes will be done at `rate`, from `now` (µs); `None` without
/// an estimate, a rate, or 1% of progress.
pub fn eta(estimated: Option<i64>, done: i64, rate: Option<Rate>, now: i64) -> Option<i64> {
    let estimated = estimated.filter(|&e| e > 0)?;
    let rate = rate.filter(|r| r.bytes_milli > 0)?;
    if i128::from(done) * 100 < i128::from(estimated) {
        return None;
    }
    let remaining = (estimated - done).max(0);
    let micros = i128::from(remaining) * 1_000_000_000 / i128::from(rate.bytes_milli);
    Some(now.saturating_add(i64::try_from(micros).unwrap_or(i64::MAX)))
}

impl PvcProgress {
    /// The record's rate, if it has one.
    pub fn rate(&self) -> Option<Rate> {
        self.rate_bytes_milli.map(|bytes_milli| Rate {
            bytes_milli,
            files_milli: self.rate_files_milli.unwrap_or(0),
        })
    }

    /// Sets the rate after a report at `now` that moved the record from `stored`; a record
    /// that is not a COPY in progress (ACTIVE) has none.
    pub(super) fn estimate(&mut self, stored: Option<&PvcProgress>, now: i64) {
        let rate = match (stored, &self.stats) {
            _ if self.is_snapshot() || self.state != super::PvcState::Active => None,
            (Some(stored), Some(stats)) => next_rate(
                stored.rate(),
                done(&stored.stats.unwrap_or_default()),
                stored.updated,
                done(stats),
                now,
            ),
            _ => None,
        };
        self.rate_bytes_milli = rate.map(|r| r.bytes_milli);
        self.rate_files_milli = rate.map(|r| r.files_milli);
    }

    /// When the copy will be done at its rate, from its last report (µs).
    pub fn eta(&self) -> Option<i64> {
        let stats = self.stats.unwrap_or_default();
        eta(
            stats.estimated_size,
            done(&stats).0,
            self.rate(),
            self.updated,
        )
    }
}

impl crate::domain::Job {
    /// Moves one COPY record's rate out of the job's (`old`) and its new one in.
    pub(crate) fn move_rate(&mut self, old: Option<Rate>, new: Option<Rate>) {
        let sum = |mine: Option<i64>, out: Option<i64>, inn: Option<i64>| {
            mine.unwrap_or(0) - out.unwrap_or(0) + inn.unwrap_or(0)
        };
        let rate = Rate {
            bytes_milli: sum(
                self.rate_bytes_milli,
                old.map(|r| r.bytes_milli),
                new.map(|r| r.bytes_milli),
            )
            .max(0),
            files_milli: sum(
                self.rate_files_milli,
                old.map(|r| r.files_milli),
                new.map(|r| r.files_milli),
            )
            .max(0),
        };
        self.rate_bytes_milli = Some(rate.bytes_milli).filter(|&m| m > 0);
        self.rate_files_milli = Some(rate.files_milli).filter(|&m| m > 0);
    }

    /// The job's rate while it runs and one of its COPY records is ACTIVE.
    pub fn rate(&self) -> Option<Rate> {
        let copying = self.copy_progress.is_some_and(|c| c.active_pvs > 0);
        (copying && !self.state.is_terminal()).then(|| Rate {
            bytes_milli: self.rate_bytes_milli.unwrap_or(0),
            files_milli: self.rate_files_milli.unwrap_or(0),
        })
    }

    /// When the job will be done at its rate, from its aggregate's estimate and progress as of
    /// its last change (µs).
    pub fn eta(&self) -> Option<i64> {
        let stats = self.copy_progress.map(|c| c.stats).unwrap_or_default();
        eta(
            stats.estimated_size,
            done(&stats).0,
            self.rate(),
            self.updated,
        )
    }

    /// A terminal job has no rate; it keeps how long it ran and its average rate.
    pub(crate) fn finish_estimates(&mut self) {
        self.rate_bytes_milli = None;
        self.rate_files_milli = None;
        let f = &self.fields;
        self.duration_seconds = f
            .start_time
            .zip(f.end_time)
            .map(|(start, end)| (end - start).max(0));
        let bytes = self.copy_progress.map(|c| done(&c.stats).0);
        self.average_bytes_per_second = match (bytes, self.duration_seconds) {
            (Some(bytes), Some(secs)) if secs > 0 => Some(bytes / secs),
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000_000;
    const SEC: i64 = 1_000_000;
    const MIB: i64 = 1 << 20;

    /// The rates after each of `reports` (seconds after T0, bytes done), from nothing.
    fn rates(reports: &[(i64, i64)]) -> Vec<i64> {
        let mut rate = None;
        let mut last = (0, (0, 0));
        let mut out = vec![];
        for &(at, bytes) in reports {
            rate = next_rate(rate, last.1, T0 + last.0 * SEC, (bytes, 0), T0 + at * SEC);
            out.push(rate.map_or(-1, Rate::bytes_per_second));
            last = (at, (bytes, 0));
        }
        out
    }

    #[test]
    fn a_steady_copy_reads_its_rate() {
        let steady: Vec<(i64, i64)> = (1..=5).map(|s| (s, s * 10 * MIB)).collect();
        assert_eq!(rates(&steady), vec![10 * MIB; 5]);
    }

    #[test]
    fn a_speed_up_shows_within_the_window() {
        // 10 MiB/s for 5 s, then 30 MiB/s, a report every 2 s: each pulls by 2/10.
        let mut reports: Vec<(i64, i64)> = (1..=5).map(|s| (s, s * 10 * MIB)).collect();
        reports.extend((1..=5).map(|k| (5 + 2 * k, 50 * MIB + 2 * k * 30 * MIB)));
        let got = rates(&reports);
        let mib = |x: f64| (x * MIB as f64).round() as i64;
        // 10 → 14 → 17.2 → 19.76 → 21.808 → 23.4464 MiB/s.
        assert_eq!(
            &got[5..],
            &[mib(14.0), mib(17.2), mib(19.76), mib(21.808), mib(23.4464)]
        );
    }

    #[test]
    fn a_stall_brings_the_rate_to_zero_within_the_window() {
        let got = rates(&[(1, 10 * MIB), (2, 20 * MIB), (7, 20 * MIB), (12, 20 * MIB)]);
        assert_eq!(got, vec![10 * MIB, 10 * MIB, 5 * MIB, 5 * MIB / 2]);
        // A single report after a long silence takes its own rate at once.
        assert_eq!(rates(&[(1, 10 * MIB), (31, 10 * MIB)]), vec![10 * MIB, 0]);
    }

    #[test]
    fn a_count_that_starts_again_starts_the_average_again() {
        assert_eq!(
            rates(&[(1, 10 * MIB), (2, 5 * MIB), (3, 15 * MIB)]),
            vec![10 * MIB, -1, 10 * MIB]
        );
    }

    #[test]
    fn the_eta_waits_for_a_rate_and_one_percent() {
        let rate = Some(Rate {
            bytes_milli: 10 * MIB * 1000,
            files_milli: 0,
        });
        assert_eq!(eta(Some(1000 * MIB), 9 * MIB, rate, T0), None, "under 1%");
        assert_eq!(
            eta(Some(1000 * MIB), 10 * MIB, rate, T0),
            Some(T0 + 99 * SEC)
        );
        assert_eq!(eta(None, 10 * MIB, rate, T0), None, "no estimate");
        assert_eq!(eta(Some(1000 * MIB), 10 * MIB, None, T0), None, "no rate");
        assert_eq!(
            eta(Some(10 * MIB), 20 * MIB, rate, T0),
            Some(T0),
            "done past the estimate"
        );
    }

    #[test]
    fn an_incremental_run_follows_what_was_read() {
        // Read 60 of 100 GiB, but sent only 6 (deduplicated): 40% remains.
        let stats = TransferStats {
            estimated_size: Some(100),
            io_size: Some(60),
            transferred_size: Some(6),
            ..Default::default()
        };
        assert_eq!(done(&stats).0, 60);
        let only_sent = TransferStats {
            transferred_size: Some(6),
            ..Default::default()
        };
        assert_eq!(done(&only_sent).0, 6);
    }
}
