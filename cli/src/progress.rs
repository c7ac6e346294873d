//! What long work shows while it runs: a bar per target on a terminal, timestamped plain
//! lines elsewhere (CI logs, pipes, `--json`). Always on stderr: stdout is for results.

use std::io::IsTerminal as _;
use std::time::SystemTime;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bars,
    Lines,
}

impl Style {
    /// Bars on an interactive terminal; lines when stderr is not one, under CI, or when
    /// stdout carries JSON for a machine.
    pub fn detect(json: bool) -> Style {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        if !json && !ci && std::io::stderr().is_terminal() {
            Style::Bars
        } else {
            Style::Lines
        }
    }
}

/// The progress display of one command.
#[derive(Debug, Clone)]
pub struct Progress {
    style: Style,
    multi: MultiProgress,
}

impl Progress {
    pub fn new(style: Style) -> Progress {
        let multi = match style {
            Style::Bars => MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            Style::Lines => MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        };
        Progress { style, multi }
    }

    /// The display of one target that will move `total` bytes.
    pub fn target(&self, name: &'static str, total: u64) -> TargetProgress {
        let bar = match self.style {
            Style::Bars => {
                let bar = self.multi.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>7} [{bar:30}] {bytes:>10}/{total_bytes:<10} {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(name);
                Some(bar)
            }
            Style::Lines => None,
        };
        TargetProgress { name, bar }
    }

    /// A line that is not about one target.
    pub fn note(&self, message: &str) {
        match self.style {
            Style::Bars => {
                let _ = self.multi.println(message);
            }
            Style::Lines => eprintln!("{} {message}", timestamp()),
        }
    }
}

/// The progress of one target; cheap to clone into a task.
#[derive(Debug, Clone)]
pub struct TargetProgress {
    name: &'static str,
    bar: Option<ProgressBar>,
}

impl TargetProgress {
    /// A display that shows nothing, for work nobody watches.
    pub fn hidden(name: &'static str) -> TargetProgress {
        TargetProgress { name, bar: None }
    }

    /// The step now running.
    pub fn step(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_owned()),
            None => eprintln!("{} {}: {message}", timestamp(), self.name),
        }
    }

    /// `bytes` more were moved (or found already in place).
    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    pub fn finish(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(message.to_owned()),
            None => eprintln!("{} {}: {message}", timestamp(), self.name),
        }
    }

    pub fn fail(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.abandon_with_message(format!("FAILED: {message}")),
            None => eprintln!("{} {}: FAILED: {message}", timestamp(), self.name),
        }
    }
}

/// `2026-11-29T12:00:01Z`: plain lines carry the time, as CI logs are read later.
fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
