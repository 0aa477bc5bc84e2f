//! The packet codec against hand-built datagrams, the limits of every
//! field, and arbitrary bytes.

use super::*;

fn rrq(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![0, 1];
    for f in fields {
        out.extend_from_slice(f);
        out.push(0);
    }
    out
}

#[test]
fn read_request_with_options_decodes_case_insensitively() {
    let bytes = rrq(&[b"pxelinux.0", b"OcTeT", b"BLKSIZE", b"1428", b"tsize", b"0", b"WindowSize", b"8", b"x-f", b"y"]);
    let Ok(Packet::Rrq(req)) = Packet::decode(&bytes) else { panic!("not a read request") };
    assert_eq!((req.filename, req.mode), ("pxelinux.0", Mode::Octet));
    let o = req.options;
    assert_eq!((o.blksize, o.tsize, o.windowsize, o.timeout, o.ignored), (Some(1428), Some(0), Some(8), None, 1));
    let bytes = rrq(&[b"a", b"NETASCII"]);
    let Ok(Packet::Rrq(req)) = Packet::decode(&bytes) else { panic!("not a read request") };
    assert_eq!(req.mode, Mode::NetAscii);
}

#[test]
fn filename_must_be_terminated_bounded_utf8_and_printable() {
    let long = vec![b'a'; MAX_FILENAME];
    assert!(Packet::decode(&rrq(&[&long, b"octet"])).is_ok());
    let longer = vec![b'a'; MAX_FILENAME + 1];
    let tl = PacketError::TooLong { what: "filename", max: MAX_FILENAME };
    assert_eq!(Packet::decode(&rrq(&[&longer, b"octet"])), Err(tl));
    assert_eq!(Packet::decode(b"\x00\x01file"), Err(PacketError::Unterminated("filename")));
    assert_eq!(Packet::decode(&rrq(&[b"", b"octet"])), Err(PacketError::Empty("filename")));
    assert_eq!(Packet::decode(&rrq(&[b"a\nb", b"octet"])), Err(PacketError::Invalid("filename")));
    assert_eq!(Packet::decode(&rrq(&[b"\xff\xfe", b"octet"])), Err(PacketError::Invalid("filename")));
    assert_eq!(Packet::decode(&rrq(&[b"file"])), Err(PacketError::Unterminated("mode")));
}

#[test]
fn only_octet_and_netascii_modes_are_accepted() {
    assert_eq!(Packet::decode(&rrq(&[b"f", b"mail"])), Err(PacketError::Mode));
    assert_eq!(Packet::decode(&rrq(&[b"f", b""])), Err(PacketError::Mode));
}

#[test]
fn options_are_bounded_unique_and_numeric() {
    let dup = rrq(&[b"f", b"octet", b"blksize", b"512", b"BlkSize", b"1024"]);
    assert_eq!(Packet::decode(&dup), Err(PacketError::DuplicateOption));
    let dup_unknown = rrq(&[b"f", b"octet", b"x", b"1", b"X", b"2"]);
    assert_eq!(Packet::decode(&dup_unknown), Err(PacketError::DuplicateOption));
    let names: Vec<Vec<u8>> = (0..=MAX_OPTIONS).map(|i| format!("opt{i}").into_bytes()).collect();
    let mut fields: Vec<&[u8]> = vec![b"f", b"octet"];
    for n in &names {
        fields.extend([n.as_slice(), b"1"]);
    }
    assert_eq!(Packet::decode(&rrq(&fields)), Err(PacketError::TooManyOptions));
    assert_eq!(Packet::decode(&rrq(&[b"f", b"octet", b"", b"1"])), Err(PacketError::Empty("option name")));
    let no_value = [rrq(&[b"f", b"octet"]), b"blksize\x00512".to_vec()].concat();
    assert_eq!(Packet::decode(&no_value), Err(PacketError::Unterminated("option value")));
    let long = vec![b'9'; MAX_OPTION_LEN + 1];
    let tl = PacketError::TooLong { what: "option value", max: MAX_OPTION_LEN };
    assert_eq!(Packet::decode(&rrq(&[b"f", b"octet", b"blksize", &long])), Err(tl));
}

#[test]
fn known_options_with_values_that_are_not_numbers_are_dropped_not_fatal() {
    for bad in [&b"-1"[..], b"1x", b" 1", b"", b"18446744073709551616"] {
        let bytes = rrq(&[b"f", b"octet", b"blksize", bad, b"windowsize", b"4"]);
        let Ok(Packet::Rrq(req)) = Packet::decode(&bytes) else { panic!("{bad:?} refused") };
        assert_eq!((req.options.blksize, req.options.windowsize, req.options.ignored), (None, Some(4), 1), "{bad:?}");
    }
}

#[test]
fn atftp_asking_tsize_enable_gets_a_request_without_tsize() {
    let bytes = rrq(&[b"kernel", b"octet", b"tsize", b"enable", b"blksize", b"1428", b"windowsize", b"8"]);
    let Ok(Packet::Rrq(req)) = Packet::decode(&bytes) else { panic!("refused") };
    assert_eq!((req.options.tsize, req.options.blksize, req.options.ignored), (None, Some(1428), 1));
}

#[test]
fn fixed_size_packets_refuse_short_and_trailing_bytes() {
    assert_eq!(Packet::decode(&[0, 4, 1, 2]), Ok(Packet::Ack { block: 0x0102 }));
    assert_eq!(Packet::decode(&[0, 4, 1]), Err(PacketError::Truncated("ack block")));
    assert_eq!(Packet::decode(&[0, 4, 1, 2, 0]), Err(PacketError::Trailing("packet", 1)));
    assert_eq!(Packet::decode(&[0]), Err(PacketError::Truncated("opcode")));
    assert_eq!(Packet::decode(&[]), Err(PacketError::Truncated("opcode")));
    assert_eq!(Packet::decode(&[0, 7]), Err(PacketError::Opcode(7)));
    assert_eq!(Packet::decode(&[0, 0]), Err(PacketError::Opcode(0)));
}

#[test]
fn error_packets_need_a_known_code_and_a_terminated_message() {
    let e = Packet::decode(b"\x00\x05\x00\x01nope\x00").unwrap();
    assert_eq!(e, Packet::Error { code: ErrorCode::FileNotFound, message: b"nope" });
    assert_eq!(Packet::decode(b"\x00\x05\x00\x09x\x00"), Err(PacketError::ErrorCode(9)));
    assert_eq!(Packet::decode(b"\x00\x05\x00\x01x"), Err(PacketError::Unterminated("error message")));
    assert_eq!(Packet::decode(b"\x00\x05\x00\x01x\x00y"), Err(PacketError::Trailing("packet", 1)));
    let raw = Packet::decode(b"\x00\x05\x00\x00\xffok\x00").unwrap();
    assert_eq!(raw, Packet::Error { code: ErrorCode::NotDefined, message: b"\xffok" });
    assert_eq!(raw.to_vec(), b"\x00\x05\x00\x00\xffok\x00", "bytes that are not UTF-8 round-trip");
}

#[test]
fn data_is_bounded_by_the_largest_block_size() {
    let mut big = vec![0, 3, 0, 1];
    big.resize(MAX_DATAGRAM, 7);
    assert!(matches!(Packet::decode(&big), Ok(Packet::Data { block: 1, data }) if data.len() == 65464));
    big.push(7);
    assert_eq!(Packet::decode(&big), Err(PacketError::TooLong { what: "data", max: 65464 }));
}

#[test]
fn every_packet_type_round_trips_through_encode() {
    let options = Options { blksize: Some(1428), timeout: Some(3), tsize: Some(0), windowsize: Some(4), ignored: 0 };
    let packets = [
        Packet::Rrq(Request { filename: "boot/ipxe.efi", mode: Mode::Octet, options }),
        Packet::Wrq(Request { filename: "x", mode: Mode::NetAscii, options: Options::default() }),
        Packet::Data { block: 65535, data: b"abc" },
        Packet::Ack { block: 7 },
        Packet::Error { code: ErrorCode::AccessViolation, message: b"access violation" },
        Packet::Oack(Options { tsize: Some(u64::MAX), ..Options::default() }),
    ];
    for p in packets {
        assert_eq!(Packet::decode(&p.to_vec()), Ok(p.clone()));
    }
    assert_eq!(Packet::Ack { block: 1 }.encode(&mut [0; 3]), Err(BufferTooSmall));
    assert_eq!(data_header(0x1234), [0, 3, 0x12, 0x34]);
}

/// The packet without the count of unknown options, which are not re-sent.
fn known(p: Packet<'_>) -> Packet<'_> {
    match p {
        Packet::Rrq(r) => Packet::Rrq(Request { options: Options { ignored: 0, ..r.options }, ..r }),
        Packet::Wrq(r) => Packet::Wrq(Request { options: Options { ignored: 0, ..r.options }, ..r }),
        Packet::Oack(o) => Packet::Oack(Options { ignored: 0, ..o }),
        other => other,
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_what_decodes_reencodes_to_the_same_packet() {
    let mut state = 0x1234_5678_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds = [rrq(&[b"f", b"octet", b"blksize", b"9", b"tsize", b"0"]), vec![0, 5, 0, 1, b'x', 0], vec![0, 4, 0, 0]];
    for i in 0..200_000 {
        let mut bytes = seeds[i % seeds.len()].clone();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % (bytes.len() + 1);
            match next() % 3 {
                0 if at < bytes.len() => bytes[at] = next() as u8,
                1 => bytes.insert(at, next() as u8),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        if let Ok(p) = Packet::decode(&bytes) {
            assert_eq!(Packet::decode(&p.to_vec()).map(known), Ok(known(p)), "{bytes:?}");
        }
    }
}
