//! Progress of a training run: a bar on a terminal, plain lines on stderr otherwise.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar on a terminal, plain log lines on stderr otherwise, nothing when quiet.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    label: String,
}

impl Progress {
    pub fn new(quiet: bool, total_steps: usize, label: &str) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_steps as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} steps {elapsed_precise} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            bar,
            plain: !quiet && !terminal,
            label: label.to_string(),
        }
    }

    pub fn report(&self, step: usize, samples: usize, loss: f64, rate: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4} | {rate:.0} samples/s"));
        } else if self.plain {
            eprintln!(
                "{}: step {step} samples {samples} loss {loss:.4} {rate:.0} samples/s",
                self.label
            );
        }
    }

    /// A line of its own (above the bar on a terminal).
    pub fn note(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.println(format!("{}: {text}", self.label));
        } else if self.plain {
            eprintln!("{}: {text}", self.label);
        }
    }

    pub fn resume(&self, step: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
