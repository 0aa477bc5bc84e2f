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
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Draw nothing until the work knows how much there is.
            let mut bar: Option<ProgressBar> = None;
            while !done.load(Ordering::Relaxed) {
                let total = progress.total.load(Ordering::Relaxed);
                if total > 0 {
                    let b = bar.get_or_insert_with(|| new_bar(label, total));
                    b.set_length(total);
                    b.set_position(progress.done.load(Ordering::Relaxed));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        out
    })
}

fn new_bar(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
            .expect("invariant: the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}
