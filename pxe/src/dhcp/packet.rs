//! Untrusted bytes → a typed [`Request`].
//!
//! Two guards stand in front of `dhcproto`. First a pre-scan with the shared
//! bounded reader (`shoal_proto::codec::Reader`): the size, the fixed header
//! (BOOTREQUEST, Ethernet, at most 16 hops), the magic cookie, and every
//! option's length, with the lengths each code we read or that `dhcproto`
//! asserts on must have (options 50-57, 80-82, 93, 94, 97, 151-155; adjacent
//! repeats of a code are concatenated first, as RFC 3396 and `dhcproto` do).
//! A code that reappears apart from its first run, option overload (52),
//! bytes after the end option other than padding, and a missing message
//! type are refused too. Only then does `dhcproto` decode, inside
//! `catch_unwind` in case its debug assertions still find something, and
//! every option the pre-scan saw must come out of it (it stops silently at
//! the first option it cannot parse; we refuse instead).

use std::fmt;
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dhcproto::v4::{relay::RelayAgentInformation, DhcpOption, Message, OptionCode};
use dhcproto::{Decodable, Decoder};
use shoal_proto::codec::{DecodeError, Reader};

use super::counters::DropReason;
use super::Mac;

/// The largest datagram we read: an Ethernet MTU. Receive buffers are one
/// byte longer so that a larger datagram is seen as such, not truncated.
pub const MAX_PACKET: usize = 1500;
/// The smallest maximum message size a client may announce (RFC 2132 9.10).
pub const MIN_MESSAGE_SIZE: u16 = 576;

const FIXED_HEADER: usize = 236;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const MAX_HOPS: u8 = 16;
const PAD: u8 = 0;
const END: u8 = 255;

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// the datagram is larger than any request we accept
    #[error("{0} bytes, over the limit of {MAX_PACKET}")]
    Oversized(usize),
    /// the header or the option list is cut short or malformed
    #[error(transparent)]
    Structure(#[from] DecodeError),
    /// a BOOTREPLY or unknown opcode
    #[error("not a boot request")]
    NotRequest,
    /// only Ethernet (type 1, 6-byte addresses) is served
    #[error("hardware type {htype} with address length {hlen}")]
    Hardware { htype: u8, hlen: u8 },
    /// relayed more often than RFC 1542 allows
    #[error("{0} relay hops")]
    TooManyHops(u8),
    /// an option whose length its code does not allow
    #[error("option {code}: invalid length {len}")]
    OptionLength { code: u8, len: usize },
    /// an option whose content its code does not allow
    #[error("option {0}: invalid value")]
    OptionValue(u8),
    /// a code that appears again apart from its first run
    #[error("option {0} repeated")]
    RepeatedOption(u8),
    /// option 52: options in the file and sname fields
    #[error("option overload is not supported")]
    Overload,
    /// no option 53 (BOOTP is not served)
    #[error("no message type")]
    NoMessageType,
    /// a message type clients do not send to servers
    #[error("message type {0} is not a client request")]
    MessageType(u8),
    /// `dhcproto` refused or skipped an option the pre-scan accepted
    #[error("option decoder: {0}")]
    Decoder(String),
    /// `dhcproto` panicked (its debug assertions)
    #[error("option decoder panicked")]
    DecoderPanic,
}

impl PacketError {
    /// The counter this refusal goes to.
    pub fn reason(&self) -> DropReason {
        match self {
            PacketError::Oversized(_) => DropReason::Oversized,
            PacketError::NotRequest | PacketError::MessageType(_) => DropReason::NotClientRequest,
            PacketError::DecoderPanic => DropReason::DecoderPanic,
            _ => DropReason::Malformed,
        }
    }
}

/// The DHCP message types a server acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

impl MessageKind {
    fn from_code(code: u8) -> Result<Self, PacketError> {
        Ok(match code {
            1 => MessageKind::Discover,
            3 => MessageKind::Request,
            4 => MessageKind::Decline,
            7 => MessageKind::Release,
            8 => MessageKind::Inform,
            other => return Err(PacketError::MessageType(other)),
        })
    }
}

/// Client system architecture, option 93 (RFC 4578, IANA registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientArch(pub u16);

impl ClientArch {
    pub const BIOS: ClientArch = ClientArch(0);
    pub const EFI_IA32: ClientArch = ClientArch(6);
    pub const EFI_BC: ClientArch = ClientArch(7);
    pub const EFI_X64: ClientArch = ClientArch(9);
    pub const EFI_ARM64: ClientArch = ClientArch(11);
    pub const EFI_X64_HTTP: ClientArch = ClientArch(16);
    pub const EFI_ARM64_HTTP: ClientArch = ClientArch(19);
}

impl fmt::Display for ClientArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What option 60 (vendor class) says the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientClass {
    /// "PXEClient...": a PXE ROM, or iPXE
    Pxe,
    /// "HTTPClient...": UEFI HTTP boot
    Http,
    /// anything else, or no option 60
    Other,
}

impl ClientClass {
    fn from_vendor_class(class: &[u8]) -> Self {
        if class.starts_with(b"PXEClient") {
            ClientClass::Pxe
        } else if class.starts_with(b"HTTPClient") {
            ClientClass::Http
        } else {
            ClientClass::Other
        }
    }

    /// The option 60 a reply to this class carries, if any.
    pub fn vendor_class(self) -> Option<&'static [u8]> {
        match self {
            ClientClass::Pxe => Some(b"PXEClient"),
            ClientClass::Http => Some(b"HTTPClient"),
            ClientClass::Other => None,
        }
    }
}

/// The client machine identifier, option 97 (type 0, a 16-byte GUID).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientGuid(pub [u8; 16]);

impl fmt::Display for ClientGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientGuid({self})")
    }
}

/// A client's request, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: MessageKind,
    pub xid: u32,
    pub mac: Mac,
    /// The broadcast bit of the flags field.
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// The first entry of option 93.
    pub arch: Option<ClientArch>,
    /// From option 60.
    pub class: ClientClass,
    /// Option 77 names "iPXE" (raw, as iPXE sends it, or in an RFC 3004 list).
    pub ipxe: bool,
    /// Option 97.
    pub guid: Option<ClientGuid>,
    /// Option 57, at least [`MIN_MESSAGE_SIZE`].
    pub max_message_size: u16,
    /// Option 82, echoed in replies (RFC 3046).
    pub relay_info: Option<RelayAgentInformation>,
}

/// Decodes and checks one datagram.
pub fn decode(bytes: &[u8]) -> Result<Request, PacketError> {
    if bytes.len() > MAX_PACKET {
        return Err(PacketError::Oversized(bytes.len()));
    }
    let scan = prescan(bytes)?;
    let decoded = catch_unwind(AssertUnwindSafe(|| Message::decode(&mut Decoder::new(bytes))));
    let msg = decoded.map_err(|_| PacketError::DecoderPanic)?.map_err(|e| PacketError::Decoder(e.to_string()))?;
    if let Some(code) = scan.codes.iter().find(|&&c| msg.opts().get(OptionCode::from(c)).is_none()) {
        return Err(PacketError::Decoder(format!("option {code} not decoded")));
    }
    let mac = <[u8; 6]>::try_from(msg.chaddr())
        .map_err(|_| PacketError::Hardware { htype: 1, hlen: msg.chaddr().len().try_into().unwrap_or(u8::MAX) })?;
    let opts = msg.opts();
    let mut req = Request {
        kind: scan.kind,
        xid: msg.xid(),
        mac: Mac(mac),
        broadcast: msg.flags().broadcast(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        requested_ip: None,
        server_id: None,
        arch: None,
        class: ClientClass::Other,
        ipxe: false,
        guid: None,
        max_message_size: MIN_MESSAGE_SIZE,
        relay_info: None,
    };
    for (_, opt) in opts.iter() {
        match opt {
            DhcpOption::RequestedIpAddress(ip) => req.requested_ip = Some(*ip),
            DhcpOption::ServerIdentifier(ip) => req.server_id = Some(*ip),
            DhcpOption::ClientSystemArchitecture(arch) => req.arch = Some(ClientArch(u16::from(*arch))),
            DhcpOption::ClassIdentifier(class) => req.class = ClientClass::from_vendor_class(class),
            DhcpOption::UserClass(class) => req.ipxe = names_ipxe(class),
            DhcpOption::ClientMachineIdentifier(id) => {
                req.guid = id.get(1..17).and_then(|g| <[u8; 16]>::try_from(g).ok()).map(ClientGuid)
            }
            DhcpOption::MaxMessageSize(size) => req.max_message_size = (*size).max(MIN_MESSAGE_SIZE),
            DhcpOption::RelayAgentInformation(info) => req.relay_info = Some(info.clone()),
            _ => {}
        }
    }
    Ok(req)
}

/// Whether a user class (option 77) is iPXE's: the bare string iPXE sends,
/// or an RFC 3004 list of length-prefixed classes holding it.
fn names_ipxe(class: &[u8]) -> bool {
    if class == b"iPXE" {
        return true;
    }
    let mut r = Reader::new(class);
    while r.remaining() > 0 {
        let Ok(len) = r.u8("user class length") else { return false };
        match r.take(usize::from(len), "user class") {
            Ok(b"iPXE") => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// What the pre-scan learnt: the message type and the option codes present.
struct Scan {
    kind: MessageKind,
    codes: Vec<u8>,
}

fn prescan(bytes: &[u8]) -> Result<Scan, PacketError> {
    let mut r = Reader::new(bytes);
    if r.u8("op")? != 1 {
        return Err(PacketError::NotRequest);
    }
    let htype = r.u8("htype")?;
    let hlen = r.u8("hlen")?;
    if htype != 1 || hlen != 6 {
        return Err(PacketError::Hardware { htype, hlen });
    }
    let hops = r.u8("hops")?;
    if hops > MAX_HOPS {
        return Err(PacketError::TooManyHops(hops));
    }
    r.take(FIXED_HEADER - 4, "fixed header")?;
    if r.array::<4>("magic cookie")? != MAGIC_COOKIE {
        return Err(DecodeError::BadMagic("magic cookie").into());
    }
    // Runs of one code, adjacent repeats concatenated. At most one per code,
    // so at most 254 runs and never more bytes than the datagram.
    let mut runs: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut seen = [false; 256];
    let mut last = None;
    loop {
        match r.u8("options end")? {
            PAD => last = None,
            END => break,
            code => {
                let len = usize::from(r.u8("option length")?);
                let body = r.take(len, "option body")?;
                match runs.last_mut() {
                    Some((_, run)) if last == Some(code) => run.extend_from_slice(body),
                    _ => {
                        if std::mem::replace(&mut seen[usize::from(code)], true) {
                            return Err(PacketError::RepeatedOption(code));
                        }
                        runs.push((code, body.to_vec()));
                    }
                }
                last = Some(code);
            }
        }
    }
    let rest = r.rest();
    if rest.iter().any(|&b| b != PAD) {
        return Err(DecodeError::Trailing("options", rest.len()).into());
    }
    let mut kind = None;
    for (code, body) in &runs {
        check_option(*code, body)?;
        if *code == 53 {
            let value = body.first().copied().ok_or(PacketError::OptionLength { code: 53, len: 0 })?;
            kind = Some(MessageKind::from_code(value)?);
        }
    }
    let kind = kind.ok_or(PacketError::NoMessageType)?;
    Ok(Scan { kind, codes: runs.into_iter().map(|(code, _)| code).collect() })
}

/// The length (and, where we rely on it, the content) a code allows.
fn check_option(code: u8, body: &[u8]) -> Result<(), PacketError> {
    let len = body.len();
    let fits = match code {
        52 => return Err(PacketError::Overload),
        82 => return check_relay_info(body),
        50 | 51 | 54 | 152..=155 => len == 4,
        53 => len == 1,
        57 => len == 2,
        55 | 60 | 77 | 151 => len >= 1,
        61 => len >= 2,
        80 => len == 0,
        81 => len >= 3,
        93 => len >= 2 && len.is_multiple_of(2),
        94 => len == 3,
        97 => len == 17,
        _ => true,
    };
    if !fits {
        return Err(PacketError::OptionLength { code, len });
    }
    match (code, body) {
        (57, &[hi, lo]) if u16::from_be_bytes([hi, lo]) < MIN_MESSAGE_SIZE => Err(PacketError::OptionValue(57)),
        (97, [kind, ..]) if *kind != 0 => Err(PacketError::OptionValue(97)),
        _ => Ok(()),
    }
}

/// Option 82 is a list of sub-options that must fill it exactly; the ones
/// `dhcproto` reads at a fixed width must have that width.
fn check_relay_info(body: &[u8]) -> Result<(), PacketError> {
    let mut r = Reader::new(body);
    while r.remaining() > 0 {
        let sub = r.u8("relay sub-option")?;
        let len = r.u8("relay sub-option length")?;
        r.take(usize::from(len), "relay sub-option body")?;
        let fits = match sub {
            4 | 5 | 11 => len == 4,
            10 => len == 1,
            _ => true,
        };
        if !fits {
            return Err(PacketError::OptionLength { code: 82, len: usize::from(len) });
        }
    }
    Ok(())
}
