//! Progress bars for long work, fed from the pipelines' atomic counters.

use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shoal_agent::capture::Progress;

/// Runs `work` while a bar shows `progress` on stderr (unless `quiet`, or
/// stderr is not a terminal).
pub fn with_bar<T>(label: &str, quiet: bool, progress: &Progress, work: impl FnOnce() -> T) -> T {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return work();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
            .expect("invariant: the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    let done = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_length(progress.total.load(Ordering::Relaxed));
                bar.set_position(progress.done.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        out
    });
    bar.finish_and_clear();
    out
}
