//! How the client commands show jobs and events in a terminal: state and type names without
//! their proto prefixes, byte sizes, text progress bars, one line per event.

use crate::pb;

pub(super) fn enum_name(name: Option<&'static str>, prefix: &str) -> String {
    name.map(|n| n.strip_prefix(prefix).unwrap_or(n).to_string())
        .unwrap_or_else(|| "-".into())
}

pub(super) fn state_name(job: &pb::Job) -> String {
    enum_name(
        pb::JobState::try_from(job.state)
            .ok()
            .map(|s| s.as_str_name()),
        "JOB_STATE_",
    )
}

pub(super) fn type_name(job: &pb::Job) -> String {
    enum_name(
        pb::JobType::try_from(job.r#type)
            .ok()
            .map(|t| t.as_str_name()),
        "JOB_TYPE_",
    )
}

pub(super) fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The widest a job's name is shown in one line; a longer one (names may be 16 KiB) is cut.
pub(super) const NAME_WIDTH: usize = 40;

/// `text` in at most `width` characters, on one line: line breaks become spaces, and a longer
/// text ends with `…`.
pub(super) fn cut(text: &str, width: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= width {
        return one_line;
    }
    let mut out: String = one_line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Bytes and files done, as the server's estimates count them: the larger of what was read
/// (`io_*`) and what was sent (`transferred_*`).
pub(super) fn done_of(s: &pb::TransferStats) -> (i64, i64) {
    let most = |a: Option<i64>, b: Option<i64>| a.unwrap_or(0).max(b.unwrap_or(0));
    (
        most(s.io_size, s.transferred_size),
        most(s.io_number_of_files, s.transferred_number_of_files),
    )
}

/// `[#########...........]` for `done` of `total`.
pub(super) fn bar(done: i64, total: i64, width: usize) -> String {
    let filled = if total > 0 {
        ((done.clamp(0, total) as f64 / total as f64) * width as f64).round() as usize
    } else {
        0
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The progress of a job in one line: PVCs done of total, bytes and files of estimated.
pub(super) fn progress_line(job: &pb::Job) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &job.kube_copy_progress {
        let done = c.completed_pvs + c.failed_pvs;
        parts.push(format!(
            "copy PVCs {done}/{} {}",
            c.total_pvs,
            bar(done, c.total_pvs, 10)
        ));
        if let Some(s) = &c.stats {
            let (sent, total) = (done_of(s).0, s.estimated_size.unwrap_or(0));
            let percent = if total > 0 { sent * 100 / total } else { 0 };
            parts.push(format!(
                "bytes {} {} / {} ({percent}%)",
                bar(sent, total, 20),
                bytes(sent),
                bytes(total)
            ));
            parts.push(format!(
                "files {}/{}",
                done_of(s).1,
                s.estimated_number_of_files.unwrap_or(0)
            ));
        }
        if c.failed_pvs > 0 {
            parts.push(format!("{} failed", c.failed_pvs));
        }
    }
    let rate = rate_line(job.bytes_per_second, job.files_per_second, job.eta.as_ref());
    if !rate.is_empty() {
        parts.push(rate);
    }
    if let Some(s) = &job.kube_snapshot_progress {
        let done = s.completed_pvs + s.failed_pvs + s.skipped_pvs;
        parts.push(format!(
            "snapshots {done}/{} {}",
            s.total_pvs,
            bar(done, s.total_pvs, 10)
        ));
        if s.skipped_pvs > 0 {
            parts.push(format!("{} skipped", s.skipped_pvs));
        }
    }
    parts.join("  ")
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `HH:MM:SS` of a unix time, UTC.
pub(super) fn hms(secs: i64) -> String {
    let secs = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

pub(super) fn now_hms() -> String {
    hms(now_secs())
}

/// `2026-12-01 18:05:12 UTC` for a unix time; `-` for none.
pub(super) fn datetime(secs: Option<i64>) -> String {
    let Some(secs) = secs else {
        return "-".into();
    };
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {} UTC", hms(rest))
}

/// `42.0 MiB/s, 120 files/s, done in 3m12s (18:09:40 UTC)`: a rate and an ETA as the server
/// computed them; empty without a rate.
pub(super) fn rate_line(
    bytes_per_second: Option<i64>,
    files_per_second: Option<i64>,
    eta: Option<&prost_types::Timestamp>,
) -> String {
    let Some(rate) = bytes_per_second else {
        return String::new();
    };
    let mut line = format!("{}/s", bytes(rate));
    if let Some(files) = files_per_second {
        line.push_str(&format!(", {files} files/s"));
    }
    if let Some(eta) = eta {
        line.push_str(&format!(
            ", done in {} ({} UTC)",
            span(eta.seconds - now_secs()),
            hms(eta.seconds)
        ));
    }
    line
}

/// A timestamp in microseconds since the epoch.
pub(super) fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

/// `21:07:40.123` (UTC) of a timestamp.
pub(super) fn clock_micros(t: &prost_types::Timestamp) -> String {
    format!("{}.{:03}", hms(t.seconds), t.nanos / 1_000_000)
}

/// A duration in µs: `0.42s` and `2.43s` below ten seconds, `12.4s` below a minute, then as
/// [`span`].
pub(super) fn span_micros(us: i64) -> String {
    let us = us.max(0);
    match us {
        u if u < 10_000_000 => format!("{:.2}s", u as f64 / 1e6),
        u if u < 60_000_000 => format!("{:.1}s", u as f64 / 1e6),
        u => span(u / 1_000_000),
    }
}

/// `1h02m`, `3m12s`, `45s`.
pub(super) fn span(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// For a stalled job: `STALLED 12m03s (no report since 18:05:12 UTC; fails at 18:55:12 UTC)`.
pub(super) fn stall_note(job: &pb::Job) -> Option<String> {
    job.stalled_since.as_ref()?;
    let last = job.last_report_time.as_ref().map_or(0, |t| t.seconds);
    let mut note = format!(
        "STALLED {} (no report since {} UTC",
        span(now_secs() - last),
        hms(last)
    );
    if let Some(at) = &job.abandon_time {
        note.push_str(&format!("; fails at {} UTC", hms(at.seconds)));
    }
    note.push(')');
    Some(note)
}

/// One event as a readable line.
pub fn event_line(event: &pb::JobEvent) -> String {
    let kind = enum_name(
        pb::JobEventType::try_from(event.r#type)
            .ok()
            .map(|t| t.as_str_name()),
        "JOB_EVENT_TYPE_",
    );
    let mut line = format!("{} {kind:<11}", now_hms());
    if let Some(job) = &event.job {
        line.push_str(&format!(
            " {} {:<9} {:<13} {}",
            job.id,
            state_name(job),
            type_name(job),
            cut(job.name.as_deref().unwrap_or(""), NAME_WIDTH)
        ));
        if let Some(pvc) = &event.pvc {
            let state = enum_name(
                pb::PvcState::try_from(pvc.state)
                    .ok()
                    .map(|s| s.as_str_name()),
                "PVC_STATE_",
            );
            line.push_str(&format!(
                "  pvc {}/{} {}",
                pvc.namespace,
                pvc.name,
                state.replace('_', "-")
            ));
            // The record's own progress, not its job's totals.
            let s = pvc.stats.unwrap_or_default();
            if let Some(total) = s.estimated_size {
                let (done, _) = done_of(&s);
                line.push_str(&format!(
                    " {} {} / {}",
                    bar(done, total, 10),
                    bytes(done),
                    bytes(total)
                ));
            }
            let rate = rate_line(pvc.bytes_per_second, pvc.files_per_second, pvc.eta.as_ref());
            if !rate.is_empty() {
                line.push_str("  ");
                line.push_str(&rate);
            }
            return line;
        }
        if let Some(note) = stall_note(job) {
            line.push_str("  ");
            line.push_str(&note);
        }
        let progress = progress_line(job);
        if !progress.is_empty() {
            line.push_str("  ");
            line.push_str(&progress);
        }
        if matches!(event.r#type, t if t == pb::JobEventType::Updated as i32)
            && let Some(last) = job.activity.last()
        {
            line.push_str(&format!("  \"{}\"", cut(last, 60)));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_to_one_short_line() {
        assert_eq!(cut("nightly", 40), "nightly");
        assert_eq!(cut("line one\nline two", 40), "line one line two");
        let long = "x".repeat(16 * 1024);
        let shown = cut(&long, NAME_WIDTH);
        assert_eq!(shown.chars().count(), NAME_WIDTH);
        assert!(shown.ends_with('…'));
        assert_eq!(cut("ééééé", 3), "éé…");
    }

    #[test]
    fn times_read_as_dates_and_spans() {
        assert_eq!(datetime(Some(1_796_149_666)), "2026-12-01 18:27:46 UTC");
        assert_eq!(datetime(Some(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(datetime(Some(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(datetime(None), "-");
        assert_eq!(span(45), "45s");
        assert_eq!(span(192), "3m12s");
        assert_eq!(span(3720), "1h02m");
        assert_eq!(span_micros(420_000), "0.42s");
        assert_eq!(span_micros(2_434_000), "2.43s");
        assert_eq!(span_micros(12_440_000), "12.4s");
        assert_eq!(span_micros(192_000_000), "3m12s");
        let t = prost_types::Timestamp {
            seconds: 1_796_149_666,
            nanos: 123_456_789,
        };
        assert_eq!(clock_micros(&t), "18:27:46.123");
        assert_eq!(micros(&t), 1_796_149_666_123_456);
    }

    #[test]
    fn a_rate_line_says_the_rate_and_when_it_is_done() {
        assert_eq!(rate_line(None, Some(3), None), "");
        assert_eq!(
            rate_line(Some(42 * 1024 * 1024), Some(120), None),
            "42.0 MiB/s, 120 files/s"
        );
        let eta = prost_types::Timestamp {
            seconds: now_secs() + 192,
            nanos: 0,
        };
        let line = rate_line(Some(1024), None, Some(&eta));
        assert!(line.starts_with("1.0 KiB/s, done in 3m1"), "{line}");
        assert!(line.ends_with(" UTC)"), "{line}");
    }
}
