//! A small Prometheus registry: counters any part of the server can add
//! (multicast sessions, DHCP, TFTP, HTTP) and gauges read at scrape time
//! (the catalog's jobs and nodes by state), rendered in the text
//! exposition format for `GET /metrics`.
//!
//! ```
//! use shoal_server::metrics::Registry;
//! let r = Registry::default();
//! let offers = r.counter("shoal_dhcp_offers_total", "DHCP offers sent");
//! offers.inc();
//! assert!(r.render().contains("shoal_dhcp_offers_total 1"));
//! ```

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count; cheap to clone and to bump.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Samples of a gauge family: label pairs and a value.
pub type Samples = Vec<(Vec<(&'static str, String)>, f64)>;

type GaugeFn = Box<dyn Fn() -> Samples + Send + Sync>;

enum Family {
    Counter {
        name: String,
        help: String,
        counter: Counter,
    },
    /// Counters kept elsewhere (the DHCP and TFTP servers' atomics), read
    /// at scrape time.
    Counted {
        name: String,
        help: String,
        read: GaugeFn,
    },
    Gauge {
        name: String,
        help: String,
        read: GaugeFn,
    },
}

/// The registry. Names follow Prometheus's rules (`[a-zA-Z_:][a-zA-Z0-9_:]*`);
/// registering a name twice returns the first counter.
#[derive(Default)]
pub struct Registry {
    families: Mutex<Vec<Family>>,
}

impl Registry {
    /// A counter, registered under `name` (made on first use).
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for fam in f.iter() {
            if let Family::Counter { name: n, counter, .. } = fam {
                if n == name {
                    return counter.clone();
                }
            }
        }
        let counter = Counter::default();
        f.push(Family::Counter { name: name.into(), help: help.into(), counter: counter.clone() });
        counter
    }

    /// A gauge family whose samples `read` computes at each scrape.
    pub fn gauge(&self, name: &str, help: &str, read: impl Fn() -> Samples + Send + Sync + 'static) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        f.push(Family::Gauge { name: name.into(), help: help.into(), read: Box::new(read) });
    }

    /// A counter family whose samples `read` takes at each scrape from
    /// counters someone else keeps (they must only go up).
    pub fn counted(&self, name: &str, help: &str, read: impl Fn() -> Samples + Send + Sync + 'static) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        f.push(Family::Counted { name: name.into(), help: help.into(), read: Box::new(read) });
    }

    /// Everything, in the text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for fam in f.iter() {
            match fam {
                Family::Counter { name, help, counter } => {
                    let _ = write!(
                        out,
                        "# HELP {name} {}\n# TYPE {name} counter\n{name} {}\n",
                        escape_help(help),
                        counter.get()
                    );
                }
                Family::Gauge { name, help, read } | Family::Counted { name, help, read } => {
                    let kind = if matches!(fam, Family::Gauge { .. }) { "gauge" } else { "counter" };
                    let _ = write!(out, "# HELP {name} {}\n# TYPE {name} {kind}\n", escape_help(help));
                    for (labels, v) in read() {
                        let l: Vec<String> =
                            labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
                        let l = if l.is_empty() { String::new() } else { format!("{{{}}}", l.join(",")) };
                        let _ = writeln!(out, "{name}{l} {v}");
                    }
                }
            }
        }
        out
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_in_the_text_format() {
        let r = Registry::default();
        let c = r.counter("shoal_x_total", "x things");
        c.add(3);
        r.counter("shoal_x_total", "again").inc();
        r.gauge("shoal_nodes", "nodes by state", || vec![(vec![("state", "free".to_string())], 2.0)]);
        r.counted("shoal_dhcp_replies_total", "replies", || vec![(vec![("kind", "offer".to_string())], 7.0)]);
        let text = r.render();
        assert!(
            text.contains("# TYPE shoal_dhcp_replies_total counter\nshoal_dhcp_replies_total{kind=\"offer\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE shoal_x_total counter\nshoal_x_total 4\n"), "{text}");
        assert!(text.contains("# TYPE shoal_nodes gauge\nshoal_nodes{state=\"free\"} 2\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
