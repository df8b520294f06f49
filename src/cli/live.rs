//! `jobtrack watch` on a terminal: a live view drawn with indicatif. One bar per running or
//! pending job (state, name, bytes done of estimated, the server's rate and ETA; a stalled job
//! marked), its unfinished PVC records as sub-lines with `--pvcs`, and a header that says what is
//! watched and whether the stream is live. A job that finishes leaves the bars and is printed
//! above them as one summary line. Bars that do not fit the terminal's height are counted in a
//! footer instead; every line keeps to the terminal's width, redrawn on resize.
//!
//! The view knows only the events it is given and, with `--pvcs`, the PVC records it lists once
//! when a job first shows: it is a client of the public API like any other.

use std::collections::HashMap;
use std::time::Duration;

use console::{Alignment, Term, pad_str, style, truncate_str};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::Client;
use super::format::{
    bytes, cut, done_of, enum_name, hms, now_hms, now_secs, span, stall_note, state_name, type_name,
};
use crate::pb;

/// The live view of one `jobtrack watch`.
pub(super) struct LiveView {
    multi: MultiProgress,
    header: ProgressBar,
    /// "… and N more": present only while some jobs do not fit.
    footer: Option<ProgressBar>,
    pvcs: bool,
    /// Watching one job (WatchJob): its end is always news.
    one_job: bool,
    /// What is watched, for the header: `job 65f…`, `jobs where {…}`, `all jobs`.
    scope: String,
    /// Unfinished jobs, in the order they were first seen; the bars show a prefix of them.
    order: Vec<String>,
    jobs: HashMap<String, Tracked>,
    finished: u64,
    /// Jobs already finished in the first snapshot of a WatchJobs: counted, not printed.
    finished_before: u64,
    synced: bool,
    /// Set while the connection is down: what happened and when it is tried again.
    notice: Option<String>,
    size: (u16, u16),
}

struct Tracked {
    job: pb::Job,
    /// The job's PVC records, in the order first seen.
    pvcs: Vec<pb::PvcProgress>,
    bar: Option<ProgressBar>,
    /// Bars of the records shown, in the order of `pvcs`.
    pvc_bars: Vec<(String, ProgressBar)>,
    listed: bool,
}

/// Rows kept free: the header, the footer, and the line the cursor rests on.
const RESERVED_ROWS: usize = 3;

impl LiveView {
    pub(super) fn new(scope: String, one_job: bool, pvcs: bool) -> LiveView {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {wide_msg}").expect("a valid template"),
        );
        header.enable_steady_tick(Duration::from_millis(120));
        let mut view = LiveView {
            multi,
            header,
            footer: None,
            pvcs,
            one_job,
            scope,
            order: Vec::new(),
            jobs: HashMap::new(),
            finished: 0,
            finished_before: 0,
            synced: false,
            notice: None,
            size: terminal_size(),
        };
        view.redraw();
        view
    }

    /// Takes one event; with `--pvcs`, lists the PVC records of a job that has just come into
    /// view (once per job).
    pub(super) async fn event(&mut self, event: &pb::JobEvent, client: &mut Client) {
        self.notice = None;
        self.apply(event);
        if self.pvcs {
            let unlisted: Vec<String> = self
                .order
                .iter()
                .filter(|id| self.jobs[*id].bar.is_some() && !self.jobs[*id].listed)
                .cloned()
                .collect();
            for id in unlisted {
                let listed = client
                    .list_pvc_progress(pb::ListPvcProgressRequest {
                        job_id: id.clone(),
                        page_size: 1000,
                        ..Default::default()
                    })
                    .await;
                if let Some(tracked) = self.jobs.get_mut(&id) {
                    tracked.listed = true;
                    for pvc in listed.map(|r| r.into_inner().pvcs).unwrap_or_default() {
                        tracked.upsert_pvc(pvc);
                    }
                }
            }
        }
        self.redraw();
    }

    fn apply(&mut self, event: &pb::JobEvent) {
        let kind = pb::JobEventType::try_from(event.r#type).unwrap_or_default();
        if kind == pb::JobEventType::Synced {
            self.synced = true;
        }
        let Some(job) = &event.job else {
            return;
        };
        if kind == pb::JobEventType::Deleted || is_finished(job) {
            let deleted = kind == pb::JobEventType::Deleted;
            let was_shown = self.jobs.contains_key(&job.id);
            self.forget(&job.id);
            // A finished job purged later, or one that was never shown, is no news.
            let news = was_shown || (!deleted && (self.synced || self.one_job));
            if news {
                self.finished += 1;
                let line = summary_line(job, deleted);
                let _ = self
                    .multi
                    .println(truncate_str(&line, self.size.1 as usize, "…"));
            } else if !deleted {
                self.finished_before += 1;
            }
            return;
        }
        let tracked = self.jobs.entry(job.id.clone()).or_insert_with(|| {
            self.order.push(job.id.clone());
            Tracked {
                job: job.clone(),
                pvcs: Vec::new(),
                bar: None,
                pvc_bars: Vec::new(),
                listed: false,
            }
        });
        tracked.job = job.clone();
        if let Some(pvc) = &event.pvc {
            tracked.upsert_pvc(pvc.clone());
        }
    }

    /// The connection is down: says so in the header until the next event.
    pub(super) fn notice(&mut self, text: String) {
        self.notice = Some(text);
        self.redraw();
    }

    /// Called every second: ETAs count down, stalls age, and a resized terminal is redrawn.
    pub(super) fn tick(&mut self) {
        self.redraw();
    }

    /// A line above the bars (kept to the terminal's width).
    pub(super) fn println(&self, line: &str) {
        let _ = self
            .multi
            .println(truncate_str(line, self.size.1 as usize, "…"));
    }

    /// Clears the bars, leaving the printed lines, before the command exits.
    pub(super) fn close(&mut self) {
        for id in std::mem::take(&mut self.order) {
            self.forget(&id);
        }
        if let Some(footer) = self.footer.take() {
            self.multi.remove(&footer);
        }
        self.header.disable_steady_tick();
        let _ = self.multi.clear();
        self.header.finish_and_clear();
        self.multi.remove(&self.header);
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
    }

    fn forget(&mut self, id: &str) {
        if let Some(tracked) = self.jobs.remove(id) {
            self.order.retain(|o| o != id);
            for bar in tracked
                .bar
                .iter()
                .chain(tracked.pvc_bars.iter().map(|(_, b)| b))
            {
                self.multi.remove(bar);
            }
        }
    }

    /// Brings the bars in line with what is known and what fits.
    fn redraw(&mut self) {
        let size = terminal_size();
        let resized = size != self.size;
        self.size = size;
        if resized {
            // The terminal may have reflowed what was drawn for the old width into more rows
            // than indicatif counts: clear from where the view starts to the screen's end.
            let _ = self.multi.clear();
            let _ = self
                .multi
                .suspend(|| Term::stdout().clear_to_end_of_screen());
        }
        let (rows, width) = (size.0 as usize, size.1 as usize);
        let layout = Layout::for_width(width);
        let mut budget = rows.saturating_sub(RESERVED_ROWS).max(1);
        let mut hidden = 0;
        let mut last_row: Option<ProgressBar> = None;
        for id in &self.order {
            let tracked = self.jobs.get_mut(id).expect("every ordered job is tracked");
            if hidden > 0 || budget == 0 {
                hidden += 1;
                tracked.hide(&self.multi);
                continue;
            }
            budget -= 1;
            let bar = tracked.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(1).with_style(layout.job.clone());
                match &last_row {
                    Some(above) => self.multi.insert_after(above, bar),
                    None => self.multi.insert_after(&self.header, bar),
                }
            });
            if resized {
                bar.set_style(layout.job.clone());
            }
            show_job(bar, &tracked.job, &layout);
            last_row = Some(bar.clone());
            if self.pvcs {
                let moving: Vec<&pb::PvcProgress> =
                    tracked.pvcs.iter().filter(|p| !pvc_finished(p)).collect();
                let shown = moving.len().min(budget);
                budget -= shown;
                let wanted: Vec<String> = moving[..shown].iter().map(|p| p.id.clone()).collect();
                tracked.pvc_bars.retain(|(pvc, bar)| {
                    let keep = wanted.contains(pvc);
                    if !keep {
                        self.multi.remove(bar);
                    }
                    keep
                });
                for (i, pvc) in moving[..shown].iter().enumerate() {
                    let at = tracked.pvc_bars.iter().position(|(p, _)| *p == pvc.id);
                    let bar = match at {
                        Some(at) => tracked.pvc_bars[at].1.clone(),
                        None => {
                            let above = last_row.as_ref().expect("the job's bar");
                            let bar = self.multi.insert_after(
                                above,
                                ProgressBar::new(1).with_style(layout.pvc.clone()),
                            );
                            tracked.pvc_bars.insert(i, (pvc.id.clone(), bar.clone()));
                            bar
                        }
                    };
                    if resized {
                        bar.set_style(layout.pvc.clone());
                    }
                    show_pvc(&bar, pvc, &layout, tracked.job.stalled_since.is_none());
                    last_row = Some(bar);
                }
            }
        }
        self.show_footer(hidden);
        self.header.set_message(self.header_text());
    }

    fn show_footer(&mut self, hidden: usize) {
        if hidden == 0 {
            if let Some(footer) = self.footer.take() {
                self.multi.remove(&footer);
            }
            return;
        }
        let footer = self.footer.get_or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("  {wide_msg:.dim}").expect("a template"));
            bar
        });
        footer.set_message(format!(
            "… and {hidden} more unfinished jobs (a taller terminal shows more)"
        ));
    }

    fn header_text(&self) -> String {
        let stalled = self
            .jobs
            .values()
            .filter(|t| t.job.stalled_since.is_some())
            .count();
        let mut text = format!("{} · {} unfinished", self.scope, self.order.len());
        if stalled > 0 {
            text.push_str(&format!(" ({stalled} stalled)"));
        }
        text.push_str(&format!(" · {} finished", self.finished));
        if self.finished_before > 0 {
            text.push_str(&format!(" (+{} before, not shown)", self.finished_before));
        }
        match (&self.notice, self.synced) {
            (Some(notice), _) => format!("{} · {text}", style(notice).yellow()),
            (None, true) => format!("{text} · live {}", now_hms()),
            (None, false) => format!("{text} · catching up…"),
        }
    }
}

impl Tracked {
    fn upsert_pvc(&mut self, pvc: pb::PvcProgress) {
        match self.pvcs.iter_mut().find(|p| p.id == pvc.id) {
            Some(known) => *known = pvc,
            None => self.pvcs.push(pvc),
        }
    }

    fn hide(&mut self, multi: &MultiProgress) {
        for bar in self
            .bar
            .take()
            .into_iter()
            .chain(self.pvc_bars.drain(..).map(|(_, b)| b))
        {
            multi.remove(&bar);
        }
    }
}

/// The bar styles for a terminal `width` columns wide: the name gets a quarter of it (12 to 40
/// characters), the bar 6 to 24, and the message the rest (indicatif cuts it to fit).
struct Layout {
    name: usize,
    job: ProgressStyle,
    pvc: ProgressStyle,
}

impl Layout {
    fn for_width(width: usize) -> Layout {
        let name = (width / 4).clamp(12, 40);
        let bar = match width {
            w if w >= 110 => 20,
            w if w >= 80 => 14,
            w if w >= 60 => 10,
            _ => 6,
        };
        let template = format!("{{prefix}} [{{bar:{bar}}}] {{wide_msg}}");
        let style = ProgressStyle::with_template(&template)
            .expect("a valid template")
            .progress_chars("=> ");
        Layout {
            name,
            job: style.clone(),
            pvc: style,
        }
    }
}

fn show_job(bar: &ProgressBar, job: &pb::Job, layout: &Layout) {
    let state = if job.stalled_since.is_some() {
        style(format!("{:<9}", "STALLED")).yellow().bold()
    } else if job.state == pb::JobState::Running as i32 {
        style(format!("{:<9}", state_name(job))).green()
    } else {
        style(format!("{:<9}", state_name(job))).dim()
    };
    let name = job
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&job.id);
    bar.set_prefix(format!(
        "{state} {}",
        pad_str(&cut(name, layout.name), layout.name, Alignment::Left, None)
    ));
    // What matters most comes first, as indicatif cuts the message at the terminal's edge.
    let mut parts = Vec::new();
    let copy = job.kube_copy_progress.as_ref();
    let stats = copy.and_then(|c| c.stats);
    match stats.and_then(|s| s.estimated_size.filter(|t| *t > 0).map(|t| (s, t))) {
        Some((s, total)) => parts.push(show_bytes(bar, &s, total)),
        None => match &job.kube_snapshot_progress {
            Some(s) if s.total_pvs > 0 => {
                let done = s.completed_pvs + s.failed_pvs + s.skipped_pvs;
                set_fraction(bar, done, s.total_pvs);
                parts.push(format!("snapshots {done}/{}", s.total_pvs));
            }
            _ => set_fraction(bar, 0, 1),
        },
    }
    match stall_note(job) {
        Some(note) => parts.push(style(note).yellow().to_string()),
        None => parts.extend(rate_parts(job.bytes_per_second, job.eta.as_ref())),
    }
    if let Some(c) = copy.filter(|c| c.total_pvs > 0) {
        parts.push(format!(
            "{}/{} PVCs",
            c.completed_pvs + c.failed_pvs,
            c.total_pvs
        ));
    }
    bar.set_message(parts.join(" · "));
}

/// `moving`: false while the job is stalled, when the record's last rate is stale news.
fn show_pvc(bar: &ProgressBar, pvc: &pb::PvcProgress, layout: &Layout, moving: bool) {
    // Lined up under the job's name: "  └ " takes the place of part of the state column.
    let width = layout.name + 6;
    let name = cut(&format!("{}/{}", pvc.namespace, pvc.name), width);
    bar.set_prefix(format!(
        "  └ {}",
        pad_str(&name, width, Alignment::Left, None)
    ));
    let state = enum_name(
        pb::PvcState::try_from(pvc.state)
            .ok()
            .map(|s| s.as_str_name()),
        "PVC_STATE_",
    );
    let mut parts = Vec::new();
    let s = pvc.stats.unwrap_or_default();
    match (
        s.estimated_size.filter(|t| *t > 0),
        pvc.snapshot_progress_percentage,
    ) {
        (Some(total), _) => parts.push(show_bytes(bar, &s, total)),
        (None, Some(percent)) => {
            set_fraction(bar, i64::from(percent), 100);
            parts.push(format!("snapshot {percent}%"));
        }
        (None, None) => set_fraction(bar, 0, 1),
    }
    if moving {
        parts.extend(rate_parts(pvc.bytes_per_second, pvc.eta.as_ref()));
    }
    if pvc.state != pb::PvcState::Active as i32 {
        parts.push(state.to_lowercase().replace('_', "-"));
    }
    bar.set_message(parts.join(" · "));
}

/// `41.0 MiB/s`, `ETA 1m12s (21:14:03)`: the server's estimates; nothing without a rate.
fn rate_parts(bytes_per_second: Option<i64>, eta: Option<&prost_types::Timestamp>) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(rate) = bytes_per_second {
        parts.push(format!("{}/s", bytes(rate)));
    }
    if let Some(eta) = eta {
        let left = eta.seconds - now_secs();
        parts.push(format!("ETA {} ({})", span(left), hms(eta.seconds)));
    }
    parts
}

/// Fills `bar` with the bytes done of `total` (> 0) and says `40% 1.2 GiB / 3.0 GiB`.
fn show_bytes(bar: &ProgressBar, stats: &pb::TransferStats, total: i64) -> String {
    let done = done_of(stats).0;
    set_fraction(bar, done, total);
    format!(
        "{}% {} / {}",
        done.clamp(0, total) * 100 / total,
        bytes(done),
        bytes(total)
    )
}

fn set_fraction(bar: &ProgressBar, done: i64, total: i64) {
    let total = total.max(1) as u64;
    bar.set_length(total);
    bar.set_position((done.max(0) as u64).min(total));
}

/// One line for a job that has finished (or was deleted): when, how it ended, what it moved,
/// how long it took.
pub(super) fn summary_line(job: &pb::Job, deleted: bool) -> String {
    let state = if deleted {
        "DELETED".to_string()
    } else {
        state_name(job)
    };
    let styled = match state.as_str() {
        "COMPLETED" => style(format!("{state:<9}")).green().bold(),
        "FAILED" | "DELETED" => style(format!("{state:<9}")).red().bold(),
        _ => style(format!("{state:<9}")).yellow().bold(),
    };
    let name = job
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&job.id);
    let mut line = format!(
        "{} {styled} {} {}",
        now_hms(),
        type_name(job).to_lowercase(),
        cut(name, 40)
    );
    if let Some(c) = &job.kube_copy_progress {
        if let Some(s) = &c.stats {
            let done = done_of(s).0;
            line.push_str(&format!(" · {}", bytes(done)));
            if let Some(total) = s.estimated_size {
                line.push_str(&format!(" of {}", bytes(total)));
            }
        }
        if c.total_pvs > 0 {
            line.push_str(&format!(" · {}/{} PVCs", c.completed_pvs, c.total_pvs));
            if c.failed_pvs > 0 {
                line.push_str(&format!(" ({} failed)", c.failed_pvs));
            }
        }
    }
    if let Some(secs) = job.duration_seconds {
        line.push_str(&format!(" · took {}", span(secs)));
    }
    if let Some(rate) = job.average_bytes_per_second {
        line.push_str(&format!(" · {}/s on average", bytes(rate)));
    }
    if let Some(message) = job.message.as_deref().filter(|m| !m.is_empty()) {
        line.push_str(&format!(" · \"{}\"", cut(message, 60)));
    }
    line
}

fn is_finished(job: &pb::Job) -> bool {
    !matches!(
        pb::JobState::try_from(job.state),
        Ok(pb::JobState::Pending | pb::JobState::Running | pb::JobState::Unknown) | Err(_)
    )
}

fn pvc_finished(pvc: &pb::PvcProgress) -> bool {
    !matches!(
        pb::PvcState::try_from(pvc.state),
        Ok(pb::PvcState::Pending | pb::PvcState::Active | pb::PvcState::Unspecified) | Err(_)
    )
}

/// Rows and columns of the terminal (24 × 80 if it cannot say).
fn terminal_size() -> (u16, u16) {
    Term::stdout().size_checked().unwrap_or((24, 80))
}
