//! `shoal job watch ID`: follows a job until it ends, printing each
//! node's state and progress when they change and every history row as
//! it is written. With --json, prints the finished job instead.

use std::collections::BTreeMap;
use std::time::Duration;

use super::http::Client;
use super::str_of;
use crate::cli::Cli;

/// Polls the job every `every` until it is no longer pending or running;
/// fails when it did not succeed.
pub fn watch(cli: &Cli, c: &Client, id: i64, every: Duration) -> anyhow::Result<()> {
    let mut seen = 0usize;
    let mut nodes: BTreeMap<String, (String, u64)> = BTreeMap::new();
    loop {
        let v = c.get(&format!("/v1/jobs/{id}"))?;
        let history = v["history"].as_array().map_or(&[][..], Vec::as_slice);
        if !cli.json {
            for e in history.iter().skip(seen) {
                println!(
                    "{} {:<12} {:<11} {}",
                    clock(e["at"].as_i64().unwrap_or(0)),
                    e["node"].as_str().unwrap_or("job"),
                    str_of(&e["state"]),
                    str_of(&e["message"])
                );
            }
            for n in v["nodes"].as_array().into_iter().flatten() {
                let now = (str_of(&n["state"]).to_string(), n["progress"].as_u64().unwrap_or(0));
                let name = str_of(&n["node"]).to_string();
                if nodes.get(&name) != Some(&now) {
                    if now.0 == "running" {
                        println!("         {name:<12} {:<11} {:>3}%", now.0, now.1);
                    }
                    nodes.insert(name, now);
                }
            }
        }
        seen = history.len();
        let state = str_of(&v["state"]).to_string();
        if state != "pending" && state != "running" {
            let done = nodes.values().filter(|(s, _)| s == "done").count();
            if cli.json {
                println!("{v}");
            } else {
                println!("job {id} {state}: {done} of {} nodes done", nodes.len());
            }
            if state != "succeeded" {
                anyhow::bail!("job {id} {state}");
            }
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

/// `HH:MM:SS` (UTC) of a unix time.
fn clock(t: i64) -> String {
    let s = t.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_shows_utc_time_of_day() {
        assert_eq!(super::clock(86_400 + 3 * 3600 + 4 * 60 + 5), "03:04:05");
    }
}
