//! Option negotiation for a read transfer (RFC 2347): which of a client's
//! options the server grants, and with what values.
//!
//! | option       | RFC  | granted when                 | value granted                  |
//! |--------------|------|------------------------------|--------------------------------|
//! | `blksize`    | 2348 | asked for ≥ 8                | the ask, capped at the config  |
//! | `windowsize` | 7440 | asked for ≥ 1                | the ask, capped at the config  |
//! | `timeout`    | 2349 | 1 ..= the configured maximum | the ask (RFC 2349: exact)      |
//! | `tsize`      | 2349 | octet mode, size known       | the file's size in bytes       |
//!
//! An option outside these bounds is left out of the OACK, so the client
//! falls back to the default, as RFC 2347 lets a server do; nothing here
//! fails a request. If no option is granted there is no OACK at all and the
//! transfer starts with DATA 1, as RFC 1350 clients expect. Pure functions,
//! no I/O.

use std::time::Duration;

use super::packet::{Mode, Options, DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE};

/// Limits on what a read transfer grants and how it retransmits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferConfig {
    /// The largest block size granted, 8..=65464. The default, 1468, is
    /// what fits a 1500-byte Ethernet frame without fragmenting.
    pub max_blksize: u16,
    /// The largest window granted, in blocks.
    pub max_windowsize: u16,
    /// The first retransmission timeout when the client names none.
    pub timeout: Duration,
    /// What exponential back-off grows the timeout to at most.
    pub max_timeout: Duration,
    /// The largest `timeout` option granted, in seconds (RFC 2349 allows
    /// up to 255; a long one holds a transfer slot for that long).
    pub max_client_timeout: u8,
    /// Retransmissions of one window (or OACK) before the transfer fails.
    pub retries: u32,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            max_blksize: 1468,
            max_windowsize: 64,
            timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(8),
            max_client_timeout: 30,
            retries: 5,
        }
    }
}

/// The bytes one window may hold in memory at most.
pub const MAX_WINDOW_BYTES: usize = 16 << 20;

/// Why a [`TransferConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// a limit, timeout or count is zero or out of its range
    #[error("invalid tftp configuration: {0}")]
    Invalid(&'static str),
}

impl TransferConfig {
    /// Checks every bound; the transfer clamps what it is given anyway, so
    /// this is for reporting a bad configuration at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&self.max_blksize) {
            return Err(ConfigError::Invalid("max_blksize outside 8..=65464"));
        }
        if self.max_windowsize == 0 {
            return Err(ConfigError::Invalid("max_windowsize is zero"));
        }
        if usize::from(self.max_windowsize) * usize::from(self.max_blksize) > MAX_WINDOW_BYTES {
            return Err(ConfigError::Invalid("max_windowsize × max_blksize over 16 MiB"));
        }
        if self.timeout.is_zero() || self.max_timeout < self.timeout {
            return Err(ConfigError::Invalid("timeout is zero or above max_timeout"));
        }
        if self.max_client_timeout == 0 {
            return Err(ConfigError::Invalid("max_client_timeout is zero"));
        }
        Ok(())
    }

    /// The window cap, lowered if need be to keep a window in memory under
    /// [`MAX_WINDOW_BYTES`] at the largest block size.
    fn window_cap(&self, blksize: u16) -> u16 {
        let by_memory = MAX_WINDOW_BYTES / usize::from(blksize.max(1));
        self.max_windowsize.clamp(1, u16::try_from(by_memory).unwrap_or(u16::MAX).max(1))
    }
}

/// What a read transfer runs with once options are settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// The client's `timeout`, when granted; else the configured one.
    pub timeout: Duration,
    /// The OACK to send before DATA 1; `None` when nothing was granted.
    pub oack: Option<Options>,
}

/// Settles a read request's options. `size` is the file's length when
/// known; netascii transfers never report one (their length differs).
pub fn negotiate(asked: &Options, mode: Mode, size: Option<u64>, config: &TransferConfig) -> Negotiated {
    let max_blksize = config.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let mut granted = Options::default();

    let blksize = match asked.blksize {
        Some(b) if b >= u64::from(MIN_BLKSIZE) => {
            let b = u16::try_from(b).unwrap_or(u16::MAX).min(max_blksize);
            granted.blksize = Some(u64::from(b));
            b
        }
        _ => DEFAULT_BLKSIZE.min(max_blksize),
    };
    let windowsize = match asked.windowsize {
        Some(w) if w >= 1 => {
            let w = u16::try_from(w).unwrap_or(u16::MAX).min(config.window_cap(blksize));
            granted.windowsize = Some(u64::from(w));
            w
        }
        _ => 1,
    };
    let timeout = match asked.timeout {
        Some(t) if (1..=u64::from(config.max_client_timeout)).contains(&t) => {
            granted.timeout = Some(t);
            Duration::from_secs(t)
        }
        _ => config.timeout,
    };
    if let (Some(_), Mode::Octet, Some(size)) = (asked.tsize, mode, size) {
        granted.tsize = Some(size);
    }
    Negotiated { blksize, windowsize, timeout, oack: granted.any().then_some(granted) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(blksize: Option<u64>, windowsize: Option<u64>, timeout: Option<u64>, tsize: Option<u64>) -> Options {
        Options { blksize, timeout, tsize, windowsize, ignored: 0 }
    }

    #[test]
    fn no_options_means_no_oack_and_rfc1350_defaults() {
        let n = negotiate(&Options::default(), Mode::Octet, Some(10), &TransferConfig::default());
        assert_eq!((n.blksize, n.windowsize, n.oack), (512, 1, None));
        assert_eq!(n.timeout, Duration::from_secs(1));
    }

    #[test]
    fn blksize_is_capped_at_the_config_and_ignored_below_eight() {
        let c = TransferConfig::default();
        let n = negotiate(&ask(Some(65464), None, None, None), Mode::Octet, None, &c);
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.oack.and_then(|o| o.blksize), Some(1468));
        let n = negotiate(&ask(Some(u64::MAX), None, None, None), Mode::Octet, None, &c);
        assert_eq!(n.blksize, 1468);
        let n = negotiate(&ask(Some(1024), None, None, None), Mode::Octet, None, &c);
        assert_eq!(n.blksize, 1024);
        let n = negotiate(&ask(Some(7), None, None, None), Mode::Octet, None, &c);
        assert_eq!((n.blksize, n.oack), (512, None));
    }

    #[test]
    fn windowsize_zero_is_ignored_and_large_asks_are_capped() {
        let c = TransferConfig { max_windowsize: 8, ..TransferConfig::default() };
        let n = negotiate(&ask(None, Some(0), None, None), Mode::Octet, None, &c);
        assert_eq!((n.windowsize, n.oack), (1, None));
        let n = negotiate(&ask(None, Some(70000), None, None), Mode::Octet, None, &c);
        assert_eq!(n.windowsize, 8);
        assert_eq!(n.oack.and_then(|o| o.windowsize), Some(8));
    }

    #[test]
    fn window_memory_stays_bounded_whatever_the_config_says() {
        let c = TransferConfig { max_blksize: 65464, max_windowsize: u16::MAX, ..TransferConfig::default() };
        assert!(c.validate().is_err());
        let n = negotiate(&ask(Some(65464), Some(65535), None, None), Mode::Octet, None, &c);
        assert!(usize::from(n.windowsize) * usize::from(n.blksize) <= MAX_WINDOW_BYTES);
    }

    #[test]
    fn timeout_outside_one_to_the_maximum_is_ignored() {
        let c = TransferConfig::default();
        for bad in [0, 31, 255, 1000] {
            let n = negotiate(&ask(None, None, Some(bad), None), Mode::Octet, None, &c);
            assert_eq!((n.timeout, n.oack), (Duration::from_secs(1), None), "timeout {bad}");
        }
        let n = negotiate(&ask(None, None, Some(3), None), Mode::Octet, None, &c);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(n.oack.and_then(|o| o.timeout), Some(3));
    }

    #[test]
    fn tsize_reports_the_size_in_octet_mode_only() {
        let c = TransferConfig::default();
        let n = negotiate(&ask(None, None, None, Some(0)), Mode::Octet, Some(12345), &c);
        assert_eq!(n.oack.and_then(|o| o.tsize), Some(12345));
        let n = negotiate(&ask(None, None, None, Some(0)), Mode::NetAscii, Some(12345), &c);
        assert_eq!(n.oack, None);
    }

    #[test]
    fn default_config_is_valid_and_bad_ones_are_named() {
        assert_eq!(TransferConfig::default().validate(), Ok(()));
        let bad = TransferConfig { max_blksize: 4, ..TransferConfig::default() };
        assert!(bad.validate().is_err());
        let bad = TransferConfig { timeout: Duration::ZERO, ..TransferConfig::default() };
        assert!(bad.validate().is_err());
    }
}
