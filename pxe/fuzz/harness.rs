// The checks behind the `tftp` fuzz target, included (not compiled on its
// own) by `fuzz_targets/tftp.rs` and by `pxe/tests/tftp.rs`, which replays
// `regressions/tftp/*` and a run of pseudo-random inputs.

/// Runs every check on one input.
pub fn check(data: &[u8]) {
    check_decoder(data);
    check_transfer(data);
}

fn check_decoder(data: &[u8]) {
    use shoal_pxe::tftp::{Options, Packet, Request};
    fn known(p: Packet<'_>) -> Packet<'_> {
        let clean = |o: Options| Options { ignored: 0, ..o };
        match p {
            Packet::Rrq(r) => Packet::Rrq(Request { options: clean(r.options), ..r }),
            Packet::Wrq(r) => Packet::Wrq(Request { options: clean(r.options), ..r }),
            Packet::Oack(o) => Packet::Oack(clean(o)),
            other => other,
        }
    }
    if let Ok(p) = Packet::decode(data) {
        let bytes = p.to_vec();
        assert_eq!(Packet::decode(&bytes).map(known), Ok(known(p)));
    }
}

/// The first byte picks the mode and options; then each datagram is a
/// control byte, a length byte and that many bytes.
fn check_transfer(data: &[u8]) {
    use shoal_pxe::tftp::{Mode, Options, Transfer, TransferConfig};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    let Some((&pick, mut rest)) = data.split_first() else { return };
    let options = Options {
        blksize: (pick & 0x08 != 0).then_some(8 + u64::from(pick & 0x07) * 3),
        windowsize: (pick & 0x30 != 0).then_some(u64::from(pick >> 4 & 0x03)),
        tsize: (pick & 0x40 != 0).then_some(0),
        ..Options::default()
    };
    let mode = if pick & 0x80 != 0 { Mode::NetAscii } else { Mode::Octet };
    let content: Vec<u8> = (0..200u32).map(|i| [b'a', b'\n', b'\r', 0][(i % 4) as usize]).collect();
    let peer = SocketAddr::from(([10, 0, 0, 2], 2000));
    let other = SocketAddr::from(([10, 0, 0, 2], 2001));
    let config = TransferConfig { retries: 3, ..TransferConfig::default() };
    let mut t = Transfer::new(peer, mode, &options, &content[..], Some(200), &config);
    let mut buf = vec![0; t.max_datagram()];
    let mut now = Instant::now();
    let mut finished = false;
    while let [control, len, tail @ ..] = rest {
        let (datagram, after) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = after;
        while let Some(tx) = t.poll_transmit(now, &mut buf) {
            assert!(!finished, "sent after finishing");
            assert!(tx.size <= buf.len());
        }
        while t.poll().is_some() {}
        finished |= t.is_finished();
        match control % 4 {
            0 => t.handle(now, peer, datagram),
            1 => t.handle(now, other, datagram),
            2 => {
                now = t.poll_timeout().unwrap_or(now + Duration::from_secs(1));
                t.handle_timeout(now);
            }
            _ => {
                let block = [datagram.first().copied().unwrap_or(0), datagram.get(1).copied().unwrap_or(0)];
                t.handle(now, peer, &[0, 4, block[0], block[1]]);
            }
        }
    }
}
