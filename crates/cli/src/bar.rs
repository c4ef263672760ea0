//! A progress bar on the terminal (tensors, bytes, rate, ETA), drawn from pipeline events.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use temper_pipeline::progress::Event;

pub struct Bar {
    bar: ProgressBar,
    tensors: usize,
    done: usize,
}

impl Bar {
    /// A bar on stderr, or an invisible one (for `--json`, or when stderr is not a terminal).
    pub fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        Bar {
            bar,
            tensors: 0,
            done: 0,
        }
    }

    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::Phase(name) => self.bar.set_message(name.to_string()),
            Event::Started { tensors, bytes } => {
                self.tensors = tensors;
                self.bar.set_length(bytes);
                self.bar.set_position(0);
                self.bar.reset_eta();
                self.bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {prefix}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
            }
            Event::Progress { unit, done, total } => {
                if self.tensors == 0 || self.done == self.tensors {
                    // Outside the quantize pass the bar counts steps instead of bytes.
                    self.bar.set_style(
                        ProgressStyle::with_template(&format!(
                            "{{msg:>9}} [{{bar:30}}] {{pos}}/{{len}} {unit} ETA {{eta}}"
                        ))
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    self.bar.set_length(total as u64);
                    self.bar.set_position(done as u64);
                }
            }
            Event::Tensor { bytes, .. } => {
                self.done += 1;
                self.bar
                    .set_prefix(format!("{}/{} tensors", self.done, self.tensors));
                self.bar.inc(bytes);
            }
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
