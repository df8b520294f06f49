//! `jobtrack watch` in a real terminal: tmux runs it in a pseudo-terminal while `jobtrack
//! simulate` drives jobs, and the test reads the screen as a person would see it
//! (`tmux capture-pane`): bars with the server's rate and ETA, PVC sub-lines, one summary line
//! per finished job, no line wider than the terminal after a resize, a server restart lived
//! through without a job shown twice, and Ctrl-C saying how to carry on.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobtrack::pb;

use crate::cli::{free_listen_address, read_lines, wait_for_line};
use crate::durability::start_binary_on;
use crate::helpers::*;

/// A tmux server of this test's own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        let socket = format!("jobtrack-test-{}-{}", std::process::id(), width);
        let tmux = Tmux { socket };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-x", &width.to_string(), "-y"])
            .arg(height.to_string())
            .arg(command)
            .status()
            .expect("tmux runs (scripts/test.sh installs Debian's tmux)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket, "-f", "/dev/null"]);
        command
    }

    /// The visible screen, one string per row.
    fn screen(&self) -> Vec<String> {
        self.capture(&[])
    }

    /// Everything the pane has shown, scrollback included.
    fn history(&self) -> Vec<String> {
        self.capture(&["-S", "-"])
    }

    fn capture(&self, extra: &[&str]) -> Vec<String> {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "0"])
            .args(extra)
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until the screen satisfies `check`; fails with the last screen after [`WAIT`].
    fn wait_for(&self, what: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "the terminal never showed {what} after {WAIT:?}; last screen:\n{}",
                    screen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", "0", keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    fn resize(&self, width: u16, height: u16) {
        let status = self
            .command()
            .args(["resize-window", "-t", "0", "-x", &width.to_string(), "-y"])
            .arg(height.to_string())
            .status()
            .expect("tmux resize-window");
        assert!(status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// A child process killed when the test ends, passed or not (a failed assertion must not leave
/// a server holding a port).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The live view's rows from its header down: the header (a spinner), job bars, PVC
/// sub-lines, the "… and N more" footer.
fn view(screen: &[String]) -> &[String] {
    let header = screen
        .iter()
        .position(|row| row.starts_with(|c: char| ('\u{2800}'..='\u{28ff}').contains(&c)))
        .unwrap_or(screen.len());
    &screen[header..]
}

/// Whether each row of the view is one whole line: it starts as a line of the view starts (a
/// line wrapped by the terminal would start a row with whatever was cut off).
fn unwrapped(screen: &[String]) -> bool {
    let view = view(screen);
    !view.is_empty()
        && view[1..]
            .iter()
            .filter(|r| !r.trim().is_empty())
            .all(|row| {
                ["RUNNING ", "PENDING ", "STALLED ", "  └ ", "  … and "]
                    .iter()
                    .any(|start| row.starts_with(start))
            })
}

fn summary_rows(rows: &[String]) -> Vec<&String> {
    rows.iter()
        .filter(|row| {
            row.len() > 9
                && row.as_bytes()[2] == b':'
                && row.as_bytes()[5] == b':'
                && ["COMPLETED", "FAILED", "PARTIAL", "CANCELLED", "SKIPPED"]
                    .iter()
                    .any(|s| row[9..].starts_with(s))
        })
        .collect()
}

fn simulate(server: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args(["simulate", "--speed", "8", "--server", server])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("jobtrack simulate starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_in_a_terminal_shows_bars_fits_a_resize_outlives_a_restart_and_stops_on_ctrl_c()
 {
    let db = test_db().await;
    let listen = free_listen_address();
    let mut server = Killed(start_binary_on(&db.url, &listen).0);
    let url = format!("http://{listen}");
    let tmux = Tmux::start(
        120,
        40,
        &format!(
            "{} watch --pvcs --server {url}; echo WATCH-EXIT $?; sleep 600",
            env!("CARGO_BIN_EXE_jobtrack")
        ),
    );
    tmux.wait_for("the header saying the view is live", |s| {
        view(s)
            .first()
            .is_some_and(|h| h.contains("all jobs") && h.contains("live"))
    });

    let mut simulator = Killed(simulate(&url));
    let lines = read_lines(simulator.0.stdout.take().expect("stdout"));
    let mut output = Vec::new();
    // A job's bar with the server's rate and ETA, and its PVCs' sub-lines under it.
    let screen = tmux.wait_for("a running job's bar with a rate and an ETA", |s| {
        view(s).iter().any(|row| {
            row.starts_with("RUNNING ") && row.contains("/s · ETA ") && row.contains('%')
        }) && view(s).iter().any(|row| row.starts_with("  └ production/"))
    });
    assert!(unwrapped(&screen), "{}", screen.join("\n"));
    assert!(screen.iter().all(|row| row.chars().count() <= 120));

    // Narrower: every line is redrawn to fit, none wraps.
    tmux.resize(72, 30);
    let screen = tmux.wait_for("the view redrawn for 72 columns", |s| {
        unwrapped(s)
            && view(s)
                .iter()
                .any(|row| row.starts_with("RUNNING ") && row.contains('…'))
    });
    assert!(
        screen.iter().all(|row| row.chars().count() <= 72),
        "{}",
        screen.join("\n")
    );

    // A server restart: the view says so, then carries on from its last resume token.
    server.0.kill().expect("SIGKILL");
    server.0.wait().expect("reaped");
    tmux.wait_for("the header saying the connection is lost", |s| {
        view(s)
            .first()
            .is_some_and(|h| h.contains("connection lost"))
    });
    let (restarted, addr) = start_binary_on(&db.url, &listen);
    let _server = Killed(restarted);
    tmux.wait_for("the view live again", |s| {
        view(s).first().is_some_and(|h| h.contains(" live "))
    });

    wait_for_line(&lines, &mut output, "simulate: done");
    assert!(
        simulator.0.wait().expect("the simulator's exit").success(),
        "{}",
        output.join("\n")
    );
    // The dying executor's job ends when the server gives up on it, after the simulator.
    let screen = tmux.wait_for("no unfinished job left", |s| {
        view(s).first().is_some_and(|h| h.contains(" 0 unfinished"))
    });
    // Every simulated job, once finished, is one summary line above the bars: exactly once,
    // the restart notwithstanding.
    let mut client = connect(addr).await;
    let jobs = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 6, "{jobs:?}");
    let history = tmux.history();
    let summaries = summary_rows(&history);
    for job in &jobs {
        let name = job.name.as_deref().expect("a name");
        let shown: Vec<_> = summaries.iter().filter(|r| r.contains(name)).collect();
        assert_eq!(
            shown.len(),
            1,
            "{name} ({:?}) in one summary line:\n{}",
            job.state,
            history.join("\n")
        );
        let state = pb::JobState::try_from(job.state)
            .expect("a state")
            .as_str_name()
            .trim_start_matches("JOB_STATE_");
        assert!(shown[0][9..].starts_with(state), "{state}: {}", shown[0]);
    }
    assert!(
        view(&screen)[1..].iter().all(|row| row.trim().is_empty()),
        "no bars left:\n{}",
        screen.join("\n")
    );

    // Ctrl-C: the bars go, and the command says how to carry on.
    tmux.keys("C-c");
    let screen = tmux.wait_for("the watch stopped with exit status 130", |s| {
        s.iter().any(|row| row.contains("WATCH-EXIT 130"))
    });
    let text = screen.join("\n");
    assert!(
        text.contains("To carry on from here: jobtrack watch --resume-token "),
        "{text}"
    );
}
