//! The catalog's closed vocabularies: each is stored as its lowercase
//! name in SQL and in JSON, and parsed back strictly.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

macro_rules! text_enum {
    ($(#[$doc:meta])* $t:ident { $($(#[$vdoc:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $t { $($(#[$vdoc])* $v),+ }

        impl $t {
            /// Every value, in declaration order.
            pub const ALL: &'static [$t] = &[$($t::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => $s),+ }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<$t, String> {
                match s {
                    $($s => Ok($t::$v),)+
                    _ => Err(format!("{s:?} is not one of: {}", [$($s),+].join(", "))),
                }
            }
        }

        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<$t> {
                v.as_str()?.parse().map_err(|e: String| FromSqlError::Other(e.into()))
            }
        }
    };
}

text_enum!(
    /// Who may see and load an image besides its owner project.
    Visibility {
        /// Only the owner project.
        Private = "private",
        /// The owner, and read-only the projects it is shared with.
        Shared = "shared",
        /// Every project, read-only.
        Public = "public",
    }
);

text_enum!(
    /// Where a node is in its life.
    NodeState {
        /// Idle, holding no image Shoal knows to be good.
        Free = "free",
        /// The agent is at work on it (loading, capturing, wiping).
        Reloading = "reloading",
        /// Waiting to boot into the agent for a job.
        Booting = "booting",
        /// Holds its current image and boots it.
        Ready = "ready",
        /// The last job failed on it.
        Failed = "failed",
    }
);

text_enum!(
    /// What a node's next network boot does.
    Boot {
        /// Boot from the local disk.
        Local = "local",
        /// Show the image menu at the console.
        Menu = "menu",
        /// Boot the agent for the node's job (set by jobs only).
        Agent = "agent",
    }
);

text_enum!(
    /// How a node's power is switched.
    PowerDriver {
        Ipmi = "ipmi",
        Redfish = "redfish",
        Qmp = "qmp",
        /// By a person, when told.
        Manual = "manual",
        /// An operator's program, run as `PROGRAM ACTION NODE MAC`.
        Command = "command",
    }
);

text_enum!(
    /// What a job does.
    JobKind {
        /// Load an image onto nodes.
        Reload = "reload",
        /// Make an image (new, or a new version of an existing one) from a node's disk.
        Capture = "capture",
        /// Erase nodes' disks.
        Wipe = "wipe",
        /// Bring an image file in from a URL.
        Import = "import",
    }
);

text_enum!(
    /// A job's state.
    JobState {
        /// Recorded, not started.
        Pending = "pending",
        /// At least one node is booting or working.
        Running = "running",
        /// Every node done.
        Succeeded = "succeeded",
        /// Every node finished, at least one failed.
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

text_enum!(
    /// One node's state within a job.
    JobNodeState {
        Queued = "queued",
        /// The node was handed the agent and its one-time token.
        Booting = "booting",
        /// The agent asked for its task.
        Running = "running",
        /// The agent reported success; waiting for the node's first boot
        /// from its disk to check in.
        Rebooting = "rebooting",
        Done = "done",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

impl JobState {
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Pending | JobState::Running)
    }
}

impl JobNodeState {
    pub fn is_active(self) -> bool {
        matches!(self, JobNodeState::Queued | JobNodeState::Booting | JobNodeState::Running | JobNodeState::Rebooting)
    }
}

/// SQL list of the active per-node states, for `state IN (...)`.
pub const ACTIVE_NODE_STATES: &str = "('queued', 'booting', 'running', 'rebooting')";
