//! TFTP packets (RFC 1350, options from RFC 2347) decoded from untrusted
//! bytes and encoded for the wire.
//!
//! Decoding follows the crate-wide codec style: a bounded [`Reader`] over a
//! borrowed slice, every string NUL-terminated and under a per-field limit,
//! trailing bytes refused, errors typed. Integers are big-endian, as RFC 1350
//! wants. What is refused:
//!
//! - a filename that is empty, over [`MAX_FILENAME`] bytes, not UTF-8 or
//!   holding control characters (names end up in paths and log lines);
//! - a mode other than `netascii` or `octet` (any case); `mail` is obsolete;
//! - more than [`MAX_OPTIONS`] options, an empty name, a name or value
//!   over its limit, an option named twice (names compare
//!   case-insensitively);
//! - an ACK, DATA or ERROR with bytes after its end, an unknown error code.
//!
//! Unknown options, and known ones whose value is not a decimal number,
//! are counted and otherwise dropped, as RFC 2347 lets a server do: they
//! are simply not acknowledged. (Debian's atftp 0.8 sends `tsize enable`
//! instead of `tsize 0`; refusing the whole request for it would help no
//! one.) Whether a number is acceptable, a block size under 8 say, is the
//! negotiation's call ([`super::options`]). Decoding does no I/O and never
//! allocates.

use super::codec::{Reader, Writer};

/// The longest filename accepted, in bytes, without its NUL.
pub const MAX_FILENAME: usize = 255;
/// The most options a request or OACK may carry.
pub const MAX_OPTIONS: usize = 16;
/// The longest option name or value, in bytes.
pub const MAX_OPTION_LEN: usize = 32;
/// The longest ERROR message, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 512;
/// The block size when no `blksize` option is agreed.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// The smallest `blksize` RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// The largest `blksize` RFC 2348 allows.
pub const MAX_BLKSIZE: u16 = 65464;
/// The largest DATA datagram: opcode, block number and [`MAX_BLKSIZE`].
pub const MAX_DATAGRAM: usize = 4 + MAX_BLKSIZE as usize;
/// Bytes before the payload of a DATA packet.
pub const DATA_HEADER: usize = 4;

/// Why bytes were refused. The `&'static str` names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// input ended early
    #[error("{0}: truncated")]
    Truncated(&'static str),
    /// bytes were left over after the packet
    #[error("{0}: {1} trailing bytes")]
    Trailing(&'static str, usize),
    /// a string longer than its field allows
    #[error("{what}: longer than {max} bytes")]
    TooLong { what: &'static str, max: usize },
    /// a string without its terminating NUL
    #[error("{0}: not terminated by a nul byte")]
    Unterminated(&'static str),
    /// a string that must not be empty is
    #[error("{0}: empty")]
    Empty(&'static str),
    /// a value outside its field's domain
    #[error("{0}: invalid value")]
    Invalid(&'static str),
    /// an opcode outside 1..=6
    #[error("unknown opcode {0}")]
    Opcode(u16),
    /// a transfer mode other than netascii or octet
    #[error("unsupported transfer mode")]
    Mode,
    /// an error code outside 0..=8
    #[error("unknown error code {0}")]
    ErrorCode(u16),
    /// more options than [`MAX_OPTIONS`]
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    /// the same option twice
    #[error("option given twice")]
    DuplicateOption,
}

/// The buffer handed to an encoder cannot hold the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer too small for the packet")]
pub struct BufferTooSmall;

/// The six packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Rrq = 1,
    Wrq = 2,
    Data = 3,
    Ack = 4,
    Error = 5,
    Oack = 6,
}

/// How file bytes travel: unchanged, or as netascii (RFC 764 line ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    NetAscii,
    Octet,
}

/// The error codes of RFC 1350 and RFC 2347.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTid = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionRefused = 8,
}

impl ErrorCode {
    fn from_u16(v: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match v {
            0 => NotDefined,
            1 => FileNotFound,
            2 => AccessViolation,
            3 => DiskFull,
            4 => IllegalOperation,
            5 => UnknownTid,
            6 => FileExists,
            7 => NoSuchUser,
            8 => OptionRefused,
            _ => return None,
        })
    }
}

/// The options this server understands, as numbers whose syntax was
/// checked and whose range was not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// RFC 2348 block size in bytes.
    pub blksize: Option<u64>,
    /// RFC 2349 retransmission timeout in seconds.
    pub timeout: Option<u64>,
    /// RFC 2349 transfer size in bytes (0 in a read request).
    pub tsize: Option<u64>,
    /// RFC 7440 blocks per window.
    pub windowsize: Option<u64>,
    /// Options dropped: other names, or a known name whose value is not a
    /// decimal number.
    pub ignored: usize,
}

impl Options {
    /// Whether any known option is present.
    pub fn any(&self) -> bool {
        self.blksize.is_some() || self.timeout.is_some() || self.tsize.is_some() || self.windowsize.is_some()
    }

    fn known(&self) -> [(&'static str, Option<u64>); 4] {
        [("blksize", self.blksize), ("tsize", self.tsize), ("timeout", self.timeout), ("windowsize", self.windowsize)]
    }
}

/// A read or write request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The name as sent: UTF-8, 1..=255 bytes, no control characters.
    pub filename: &'a str,
    pub mode: Mode,
    pub options: Options,
}

/// One decoded datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    /// `message` is the text as sent: no NUL, at most [`MAX_ERROR_MESSAGE`]
    /// bytes, not necessarily UTF-8 (show it with `from_utf8_lossy`).
    Error {
        code: ErrorCode,
        message: &'a [u8],
    },
    Oack(Options),
}

impl<'a> Packet<'a> {
    /// Decodes one datagram, strictly.
    pub fn decode(bytes: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        let mut r = Reader::new(bytes);
        let op = r.u16("opcode")?;
        let packet = match op {
            1 => Packet::Rrq(request(&mut r)?),
            2 => Packet::Wrq(request(&mut r)?),
            3 => {
                let block = r.u16("data block")?;
                let data = r.rest();
                if data.len() > MAX_BLKSIZE as usize {
                    return Err(PacketError::TooLong { what: "data", max: MAX_BLKSIZE as usize });
                }
                Packet::Data { block, data }
            }
            4 => Packet::Ack { block: r.u16("ack block")? },
            5 => {
                let raw = r.u16("error code")?;
                let code = ErrorCode::from_u16(raw).ok_or(PacketError::ErrorCode(raw))?;
                Packet::Error { code, message: r.cstr(MAX_ERROR_MESSAGE, "error message")? }
            }
            6 => Packet::Oack(options(&mut r)?),
            other => return Err(PacketError::Opcode(other)),
        };
        r.finish("packet")?;
        Ok(packet)
    }

    pub fn opcode(&self) -> Opcode {
        match self {
            Packet::Rrq(_) => Opcode::Rrq,
            Packet::Wrq(_) => Opcode::Wrq,
            Packet::Data { .. } => Opcode::Data,
            Packet::Ack { .. } => Opcode::Ack,
            Packet::Error { .. } => Opcode::Error,
            Packet::Oack(_) => Opcode::Oack,
        }
    }

    /// Writes the packet to the front of `buf`, returning its length.
    /// Options are written in a fixed order; ignored ones are not written.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        w.u16(self.opcode() as u16)?;
        match self {
            Packet::Rrq(req) | Packet::Wrq(req) => {
                w.cstr(req.filename.as_bytes())?;
                w.cstr(match req.mode {
                    Mode::NetAscii => b"netascii",
                    Mode::Octet => b"octet",
                })?;
                write_options(&mut w, &req.options)?;
            }
            Packet::Data { block, data } => {
                w.u16(*block)?;
                w.bytes(data)?;
            }
            Packet::Ack { block } => w.u16(*block)?,
            Packet::Error { code, message } => {
                w.u16(*code as u16)?;
                // A decoded message fits whole; one of ours is cut at a NUL
                // or at the limit rather than sent malformed.
                let text = *message;
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len()).min(MAX_ERROR_MESSAGE);
                w.cstr(&text[..end])?;
            }
            Packet::Oack(options) => write_options(&mut w, options)?,
        }
        Ok(w.len())
    }

    /// [`Packet::encode`] into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        // Opcode, two u16 or NUL-terminated fields, the longest mode and
        // every option at its longest (ten-byte names, twenty-digit values).
        let variable = match self {
            Packet::Rrq(req) | Packet::Wrq(req) => req.filename.len(),
            Packet::Data { data, .. } => data.len(),
            Packet::Error { message, .. } => message.len(),
            Packet::Ack { .. } | Packet::Oack(_) => 0,
        };
        let mut buf = vec![0; 2 + 2 + variable + 1 + 9 + 4 * (11 + 21)];
        let n = self.encode(&mut buf).expect("invariant: the buffer is sized for the longest encoding");
        buf.truncate(n);
        buf
    }
}

/// The 4 bytes that start a DATA packet.
pub fn data_header(block: u16) -> [u8; DATA_HEADER] {
    let [a, b] = (Opcode::Data as u16).to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

fn request<'a>(r: &mut Reader<'a>) -> Result<Request<'a>, PacketError> {
    let name = r.cstr(MAX_FILENAME, "filename")?;
    if name.is_empty() {
        return Err(PacketError::Empty("filename"));
    }
    let filename = std::str::from_utf8(name).map_err(|_| PacketError::Invalid("filename"))?;
    if filename.chars().any(char::is_control) {
        return Err(PacketError::Invalid("filename"));
    }
    let mode = r.cstr(MAX_OPTION_LEN, "mode")?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::NetAscii
    } else {
        return Err(PacketError::Mode);
    };
    Ok(Request { filename, mode, options: options(r)? })
}

/// Name/value pairs until the end of the input.
fn options(r: &mut Reader<'_>) -> Result<Options, PacketError> {
    let mut out = Options::default();
    let mut seen: [&[u8]; MAX_OPTIONS] = [&[]; MAX_OPTIONS];
    let mut count = 0;
    while r.remaining() > 0 {
        if count == MAX_OPTIONS {
            return Err(PacketError::TooManyOptions);
        }
        let name = r.cstr(MAX_OPTION_LEN, "option name")?;
        let value = r.cstr(MAX_OPTION_LEN, "option value")?;
        if name.is_empty() {
            return Err(PacketError::Empty("option name"));
        }
        if seen[..count].iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return Err(PacketError::DuplicateOption);
        }
        seen[count] = name;
        count += 1;
        let slot = match name.to_ascii_lowercase().as_slice() {
            b"blksize" => &mut out.blksize,
            b"timeout" => &mut out.timeout,
            b"tsize" => &mut out.tsize,
            b"windowsize" => &mut out.windowsize,
            _ => {
                out.ignored += 1;
                continue;
            }
        };
        match decimal(value) {
            Some(v) => *slot = Some(v),
            None => out.ignored += 1,
        }
    }
    Ok(out)
}

/// A non-empty run of ASCII digits that fits a `u64`.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The known options, in a fixed order, as name/value pairs.
fn write_options(w: &mut Writer<'_>, options: &Options) -> Result<(), BufferTooSmall> {
    for (name, value) in options.known() {
        if let Some(v) = value {
            w.cstr(name.as_bytes())?;
            w.cstr(v.to_string().as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
