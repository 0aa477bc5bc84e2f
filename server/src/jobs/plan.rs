//! What the runner does next for one node: a pure function of the node's
//! catalog row, the time and the time-outs, so every rule is tested
//! without a clock, a catalog or a power driver.
//!
//! Per node, in order: power-cycle it to boot the agent; if the agent
//! has not taken its task within `agent` of a cycle, cycle again, up to
//! `power_retries` more times, then fail it. While the agent works, fail
//! it if no heartbeat comes within `heartbeat`. After a good report in
//! a job that waits for the first boot, power-cycle it once if it has not
//! checked in after `reboot_after` (the agent normally reboots by
//! itself), and fail it if it has not within `first_boot`.
//!
//! `floor` is when the runner started: time the server was down does not
//! count against a node, so a restart resumes rather than times out.

use std::time::Duration;

use crate::catalog::execution::NodeStep;
use crate::catalog::JobNodeState;

/// The pause before a failed power command is tried again.
pub const POWER_RETRY: Duration = Duration::from_secs(10);

/// The runner's time-outs (flags of `shoal server`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// From a power cycle to the agent taking its task.
    pub agent: Duration,
    /// Power cycles after the first before a node that never reaches its
    /// agent fails.
    pub power_retries: u32,
    /// The longest silence from a working agent.
    pub heartbeat: Duration,
    /// From the report to the first-boot check-in.
    pub first_boot: Duration,
    /// From the report to the power cycle for a node that has not
    /// checked in (it did not reboot by itself).
    pub reboot_after: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            agent: Duration::from_secs(600),
            power_retries: 2,
            heartbeat: Duration::from_secs(300),
            first_boot: Duration::from_secs(900),
            reboot_after: Duration::from_secs(300),
        }
    }
}

/// The runner's next move for a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet.
    Wait,
    /// Power-cycle it into the agent, for this reason.
    PowerCycle(String),
    /// Power-cycle it into its disk (after its report).
    Reboot,
    /// Give up on it, for this reason.
    Fail(String),
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// What to do for `s` at unix time `now`.
pub fn next(now: i64, floor: i64, s: &NodeStep, t: &Timeouts) -> Next {
    let since = s.since.unwrap_or(floor).max(floor);
    let elapsed = now.saturating_sub(since);
    match s.state {
        JobNodeState::Queued | JobNodeState::Booting => {
            let wait = if s.power_failed { secs(POWER_RETRY).min(secs(t.agent)) } else { secs(t.agent) };
            if s.attempts == 0 {
                Next::PowerCycle("to boot the agent".into())
            } else if elapsed < wait {
                Next::Wait
            } else if s.attempts <= t.power_retries {
                if s.power_failed {
                    Next::PowerCycle("the last power command failed".into())
                } else {
                    Next::PowerCycle(format!("no agent {}s after the last one", secs(t.agent)))
                }
            } else if s.power_failed {
                Next::Fail(format!("{} power cycles failed (see the power-error events)", s.attempts))
            } else {
                Next::Fail(format!(
                    "the agent did not take its task within {}s of each of {} power cycles",
                    secs(t.agent),
                    s.attempts
                ))
            }
        }
        JobNodeState::Running => {
            let last = s.heartbeat.unwrap_or(since).max(floor);
            if now.saturating_sub(last) >= secs(t.heartbeat) {
                Next::Fail(format!("no word from the agent for {}s", secs(t.heartbeat)))
            } else {
                Next::Wait
            }
        }
        JobNodeState::Rebooting => {
            if elapsed >= secs(t.first_boot) {
                Next::Fail(format!("no first-boot check-in within {}s of the agent's report", secs(t.first_boot)))
            } else if !s.rebooted && elapsed >= secs(t.reboot_after) {
                Next::Reboot
            } else {
                Next::Wait
            }
        }
        JobNodeState::Done | JobNodeState::Failed | JobNodeState::Cancelled => Next::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::nodes::Power;
    use crate::catalog::{JobId, JobKind, Mac, Name, PowerDriver};

    fn t() -> Timeouts {
        Timeouts {
            agent: Duration::from_secs(100),
            power_retries: 2,
            heartbeat: Duration::from_secs(30),
            first_boot: Duration::from_secs(200),
            reboot_after: Duration::from_secs(50),
        }
    }

    fn step(state: JobNodeState, attempts: u32, since: i64) -> NodeStep {
        NodeStep {
            job: JobId(1),
            kind: JobKind::Reload,
            node: Name::parse("pc1").unwrap(),
            mac: Mac::parse("52:54:00:00:00:01").unwrap(),
            power: Power { driver: PowerDriver::Manual, address: String::new() },
            state,
            attempts,
            since: Some(since),
            heartbeat: None,
            rebooted: false,
            power_failed: false,
        }
    }

    #[test]
    fn a_queued_node_is_power_cycled_at_once() {
        assert!(matches!(next(1000, 0, &step(JobNodeState::Queued, 0, 1000), &t()), Next::PowerCycle(_)));
    }

    #[test]
    fn a_node_without_its_agent_is_cycled_again_then_failed_after_the_retries() {
        let s = |attempts| step(JobNodeState::Booting, attempts, 1000);
        assert_eq!(next(1099, 0, &s(1), &t()), Next::Wait);
        assert!(matches!(next(1100, 0, &s(1), &t()), Next::PowerCycle(_)));
        assert!(matches!(next(1100, 0, &s(2), &t()), Next::PowerCycle(_)));
        match next(1100, 0, &s(3), &t()) {
            Next::Fail(why) => assert!(why.contains("3 power cycles"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_silent_agent_fails_after_the_heartbeat_time_out() {
        let mut s = step(JobNodeState::Running, 1, 1000);
        s.heartbeat = Some(1010);
        assert_eq!(next(1039, 0, &s, &t()), Next::Wait);
        assert!(matches!(next(1040, 0, &s, &t()), Next::Fail(_)));
    }

    #[test]
    fn time_the_server_was_down_does_not_count_against_a_node() {
        let mut s = step(JobNodeState::Running, 1, 1000);
        s.heartbeat = Some(1000);
        // Restarted at 5000: the agent has a whole heartbeat time-out.
        assert_eq!(next(5010, 5000, &s, &t()), Next::Wait);
        assert!(matches!(next(5030, 5000, &s, &t()), Next::Fail(_)));
        let b = step(JobNodeState::Booting, 3, 1000);
        assert_eq!(next(5050, 5000, &b, &t()), Next::Wait);
    }

    #[test]
    fn a_reported_node_is_rebooted_once_then_failed_without_a_check_in() {
        let mut s = step(JobNodeState::Rebooting, 1, 1000);
        assert_eq!(next(1049, 0, &s, &t()), Next::Wait);
        assert_eq!(next(1050, 0, &s, &t()), Next::Reboot);
        s.rebooted = true;
        assert_eq!(next(1150, 0, &s, &t()), Next::Wait);
        assert!(matches!(next(1200, 0, &s, &t()), Next::Fail(_)));
    }

    #[test]
    fn a_failed_power_command_is_retried_soon_within_the_retries() {
        let mut s = step(JobNodeState::Booting, 1, 1000);
        s.power_failed = true;
        let soon = 1000 + secs(POWER_RETRY);
        assert_eq!(next(soon - 1, 0, &s, &t()), Next::Wait);
        assert_eq!(next(soon, 0, &s, &t()), Next::PowerCycle("the last power command failed".into()));
        s.attempts = 3;
        assert!(matches!(next(soon, 0, &s, &t()), Next::Fail(why) if why.contains("3 power cycles failed")));
    }

    #[test]
    fn finished_nodes_are_left_alone() {
        for st in [JobNodeState::Done, JobNodeState::Failed, JobNodeState::Cancelled] {
            assert_eq!(next(1_000_000, 0, &step(st, 0, 0), &t()), Next::Wait);
        }
    }
}
