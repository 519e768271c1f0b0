//! A model download's progress: a bar on standard error when it is a terminal, one log line
//! when it is not.

use std::io::IsTerminal;

use dynamo_assets::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows the progress of one download, told through [`Download::update`]; a file found in the
/// cache shows nothing.
pub(crate) struct Download {
    what: String,
    bar: Option<ProgressBar>,
}

impl Download {
    /// The download of `what`, as in "fetching {what}".
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Download {
            what: what.into(),
            bar: None,
        }
    }

    /// Show `progress`; the first report starts the bar, or writes the log line.
    pub(crate) fn update(&mut self, progress: Progress) {
        let bar = self.bar.get_or_insert_with(|| {
            if std::io::stderr().is_terminal() {
                let bar =
                    ProgressBar::with_draw_target(progress.total, ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(format!("fetching {}", self.what));
                bar
            } else {
                let size = progress
                    .total
                    .map(|bytes| format!(" ({} MB)", bytes / 1_000_000))
                    .unwrap_or_default();
                tracing::info!("fetching {}{size}", self.what);
                ProgressBar::hidden()
            }
        });
        bar.set_position(progress.done);
    }

    /// Leave a line on the terminal saying what was fetched.
    pub(crate) fn finish(self) {
        if let Some(bar) = self.bar {
            if let Ok(style) = ProgressStyle::with_template("{msg} ({total_bytes} in {elapsed})") {
                bar.set_style(style);
            }
            bar.finish_with_message(format!("fetched {}", self.what));
        }
    }
}
