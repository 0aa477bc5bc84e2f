//! The read transfer on a virtual clock: a model client, loss injected by
//! dropping datagrams, time jumping to the next deadline.

use super::*;
use crate::tftp::packet::{Packet, MAX_DATAGRAM};

const SERVER: &str = "10.0.0.1:40000";
const CLIENT: &str = "10.0.0.2:2000";

fn client() -> SocketAddr {
    CLIENT.parse().unwrap()
}

fn opts(blksize: Option<u64>, windowsize: Option<u64>, tsize: Option<u64>) -> Options {
    Options { blksize, windowsize, tsize, timeout: None, ignored: 0 }
}

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn transfer<'a>(data: &'a [u8], options: &Options) -> Transfer<&'a [u8]> {
    Transfer::new(client(), Mode::Octet, options, data, Some(data.len() as u64), &TransferConfig::default())
}

/// Every datagram the transfer wants to send now, decoded owned.
fn drain(t: &mut Transfer<&[u8]>, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut buf = vec![0; MAX_DATAGRAM];
    let mut out = Vec::new();
    while let Some(tx) = t.poll_transmit(now, &mut buf) {
        out.push((tx.dest, buf[..tx.size].to_vec()));
    }
    out
}

fn events(t: &mut Transfer<&[u8]>) -> Vec<Event> {
    std::iter::from_fn(|| t.poll()).collect()
}

fn data_block(bytes: &[u8]) -> (u16, usize) {
    match Packet::decode(bytes) {
        Ok(Packet::Data { block, data }) => (block, data.len()),
        other => panic!("expected DATA, got {other:?}"),
    }
}

fn ack(block: u16) -> Vec<u8> {
    Packet::Ack { block }.to_vec()
}

/// A client after RFC 1350 and RFC 7440: ACKs each window's last block, or
/// the last in-order block on a gap, a duplicate or its own timeout.
struct Model {
    next: u64,
    blksize: usize,
    window: u16,
    in_window: u16,
    got: Vec<u8>,
    done: bool,
}

impl Model {
    fn on_datagram(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        match Packet::decode(bytes).ok()? {
            Packet::Oack(o) => {
                self.blksize = o.blksize.map_or(512, |b| b as usize);
                self.window = o.windowsize.map_or(1, |w| w as u16);
                Some(ack(0))
            }
            Packet::Data { block, data } if block == self.next as u16 => {
                self.got.extend_from_slice(data);
                self.next += 1;
                self.in_window += 1;
                if data.len() < self.blksize {
                    self.done = true;
                }
                (self.done || self.in_window == self.window).then(|| self.ack_last())
            }
            Packet::Data { .. } => Some(self.ack_last()),
            _ => None,
        }
    }

    fn ack_last(&mut self) -> Vec<u8> {
        self.in_window = 0;
        ack((self.next - 1) as u16)
    }
}

struct Rng(u64);
impl Rng {
    fn chance(&mut self, percent: u64) -> bool {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % 100 < percent
    }
}

/// Runs a whole transfer with `loss` percent of datagrams dropped each way;
/// returns what the client got, the transfer's outcome and its stats.
fn simulate(data: &[u8], options: &Options, loss: u64, seed: u64) -> (Vec<u8>, Event, Stats) {
    // Enough retries that loss alone (not bad luck) never ends a transfer.
    let config = TransferConfig { retries: 40, ..TransferConfig::default() };
    let mut t = Transfer::new(client(), Mode::Octet, options, data, Some(data.len() as u64), &config);
    let mut m = Model { next: 1, blksize: 512, window: 1, in_window: 0, got: Vec::new(), done: false };
    let mut rng = Rng(seed);
    let mut now = Instant::now();
    let client_timeout = Duration::from_millis(2500);
    let mut client_deadline = now + client_timeout;
    loop {
        let sent = drain(&mut t, now);
        for (_, bytes) in &sent {
            if rng.chance(loss) {
                continue;
            }
            client_deadline = now + client_timeout;
            if let Some(a) = m.on_datagram(bytes) {
                if !rng.chance(loss) {
                    t.handle(now, client(), &a);
                }
            }
        }
        if let Some(e) = events(&mut t).into_iter().find(|e| !matches!(e, Event::Refused { .. })) {
            return (m.got, e, t.stats());
        }
        if !sent.is_empty() {
            continue;
        }
        // Nothing in flight: jump to whichever side's timer fires first.
        let server = t.poll_timeout().expect("a live transfer with nothing to send has a deadline");
        if !m.done && client_deadline < server {
            now = client_deadline;
            client_deadline = now + client_timeout;
            let a = m.ack_last();
            if !rng.chance(loss) {
                t.handle(now, client(), &a);
            }
        } else {
            now = server;
            t.handle_timeout(now);
        }
    }
}

#[test]
fn small_file_goes_in_one_short_block_without_options() {
    let data = file(100);
    let mut t = transfer(&data, &Options::default());
    let now = Instant::now();
    let out = drain(&mut t, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, client());
    assert_eq!(data_block(&out[0].1), (1, 100));
    t.handle(now, client(), &ack(1));
    assert_eq!(events(&mut t), vec![Event::Complete]);
    assert!(t.is_finished());
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn file_of_whole_blocks_ends_with_an_empty_block() {
    let data = file(1024);
    let (got, event, stats) = simulate(&data, &Options::default(), 0, 1);
    assert_eq!((got, event), (data, Event::Complete));
    assert_eq!(stats.data_sent, 3);
}

#[test]
fn lost_data_is_resent_after_the_timeout_with_backoff() {
    let data = file(600);
    let mut t = transfer(&data, &Options::default());
    let t0 = Instant::now();
    assert_eq!(drain(&mut t, t0).len(), 1);
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    let t1 = t0 + Duration::from_secs(1);
    t.handle_timeout(t1);
    let again = drain(&mut t, t1);
    assert_eq!(data_block(&again[0].1), (1, 512));
    assert_eq!(t.poll_timeout(), Some(t1 + Duration::from_secs(2)), "timeout doubles");
    t.handle(t1, client(), &ack(1));
    let next = drain(&mut t, t1);
    assert_eq!(data_block(&next[0].1), (2, 88));
    assert_eq!(t.poll_timeout(), Some(t1 + Duration::from_secs(1)), "progress resets the timeout");
}

#[test]
fn duplicate_acks_never_cause_a_resend() {
    let data = file(2000);
    let mut t = transfer(&data, &Options::default());
    let now = Instant::now();
    drain(&mut t, now);
    t.handle(now, client(), &ack(1));
    assert_eq!(data_block(&drain(&mut t, now)[0].1), (2, 512));
    for _ in 0..5 {
        t.handle(now, client(), &ack(1));
        assert!(drain(&mut t, now).is_empty(), "a duplicate ACK sent something");
    }
    t.handle(now, client(), &ack(0));
    t.handle(now, client(), &ack(9));
    assert!(drain(&mut t, now).is_empty());
    assert_eq!(t.stats().acks_ignored, 7);
    assert_eq!(t.stats().data_sent, 2);
}

#[test]
fn lost_acks_and_data_still_deliver_every_byte_once() {
    let data = file(50_000);
    for seed in 0..50 {
        let (got, event, _) = simulate(&data, &Options::default(), 20, seed);
        assert_eq!(event, Event::Complete, "seed {seed}");
        assert_eq!(got, data, "seed {seed}");
    }
}

#[test]
fn windowed_transfers_survive_loss() {
    let data = file(300_000);
    for seed in 0..30 {
        let window = 1 + seed % 16;
        let (got, event, stats) = simulate(&data, &opts(Some(1024), Some(window), None), 10, seed);
        assert_eq!((got == data, event), (true, Event::Complete), "seed {seed}");
        assert!(stats.bytes_acked == data.len() as u64);
    }
}

#[test]
fn a_short_ack_in_a_window_resends_from_the_gap() {
    let data = file(8 * 100);
    let mut t = transfer(&data, &opts(Some(100), Some(4), None));
    let now = Instant::now();
    drain(&mut t, now);
    t.handle(now, client(), &ack(0));
    let window: Vec<u16> = drain(&mut t, now).iter().map(|(_, b)| data_block(b).0).collect();
    assert_eq!(window, [1, 2, 3, 4]);
    t.handle(now, client(), &ack(2));
    let window: Vec<u16> = drain(&mut t, now).iter().map(|(_, b)| data_block(b).0).collect();
    assert_eq!(window, [3, 4, 5, 6]);
    t.handle(now, client(), &ack(1));
    assert!(drain(&mut t, now).is_empty(), "a stale ACK moved the window");
    assert_eq!(t.stats().data_resent, 2);
}

#[test]
fn datagrams_from_another_port_get_error_5_and_change_nothing() {
    let data = file(2000);
    let mut t = transfer(&data, &Options::default());
    let now = Instant::now();
    drain(&mut t, now);
    let intruder: SocketAddr = "10.0.0.2:2001".parse().unwrap();
    t.handle(now, intruder, &ack(1));
    let out = drain(&mut t, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, intruder);
    assert!(matches!(Packet::decode(&out[0].1), Ok(Packet::Error { code: ErrorCode::UnknownTid, .. })));
    assert_eq!(events(&mut t), vec![Event::Refused { from: intruder, reason: Refusal::WrongTid }]);
    t.handle(now, client(), &ack(1));
    assert_eq!(data_block(&drain(&mut t, now)[0].1), (2, 512));
    let _ = SERVER;
}

#[test]
fn a_silent_peer_exhausts_the_retries_and_the_transfer_fails() {
    let data = file(10);
    let mut t = transfer(&data, &Options::default());
    let mut now = Instant::now();
    let mut waits = Vec::new();
    loop {
        drain(&mut t, now);
        let Some(deadline) = t.poll_timeout() else { break };
        waits.push((deadline - now).as_secs());
        now = deadline;
        t.handle_timeout(now);
    }
    assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    assert_eq!(events(&mut t), vec![Event::Failed(Failure::TimedOut(5))]);
    assert!(t.is_finished());
}

#[test]
fn block_numbers_wrap_to_zero_past_65535() {
    let data = file(8 * 70_000 + 3);
    let (got, event, stats) = simulate(&data, &opts(Some(8), None, None), 0, 7);
    assert_eq!((got.len(), event), (data.len(), Event::Complete));
    assert_eq!(got, data);
    assert_eq!(stats.data_sent, 70_001);
}

#[test]
fn wrapped_block_numbers_are_sent_as_zero_then_one() {
    let data = file(8 * 65_537);
    let mut t = transfer(&data, &opts(Some(8), None, None));
    let now = Instant::now();
    drain(&mut t, now);
    t.handle(now, client(), &ack(0));
    let mut seen = Vec::new();
    for i in 1..=65_538u64 {
        let out = drain(&mut t, now);
        let (block, _) = data_block(&out[0].1);
        if i >= 65_535 {
            seen.push(block);
        }
        t.handle(now, client(), &ack(block));
    }
    assert_eq!(seen, [65_535, 0, 1, 2]);
    assert_eq!(events(&mut t), vec![Event::Complete]);
}

#[test]
fn options_send_an_oack_and_hold_data_until_ack_0() {
    let data = file(3000);
    let mut t = transfer(&data, &opts(Some(1428), None, Some(0)));
    let now = Instant::now();
    let out = drain(&mut t, now);
    let Ok(Packet::Oack(o)) = Packet::decode(&out[0].1) else { panic!("no OACK: {out:?}") };
    assert_eq!((o.blksize, o.tsize, o.windowsize), (Some(1428), Some(3000), None));
    t.handle(now, client(), &ack(1));
    assert!(drain(&mut t, now).is_empty(), "DATA before ACK 0");
    let later = now + Duration::from_secs(1);
    t.handle_timeout(later);
    assert!(matches!(Packet::decode(&drain(&mut t, later)[0].1), Ok(Packet::Oack(_))));
    t.handle(later, client(), &ack(0));
    assert_eq!(data_block(&drain(&mut t, later)[0].1), (1, 1428));
}

#[test]
fn an_error_in_answer_to_the_oack_ends_the_transfer_quietly() {
    let data = file(3000);
    let mut t = transfer(&data, &opts(Some(1428), None, None));
    let now = Instant::now();
    drain(&mut t, now);
    let refuse = Packet::Error { code: ErrorCode::OptionRefused, message: b"no" }.to_vec();
    t.handle(now, client(), &refuse);
    assert!(drain(&mut t, now).is_empty());
    let expected = Failure::Peer { code: ErrorCode::OptionRefused, message: "no".into() };
    assert_eq!(events(&mut t), vec![Event::Failed(expected)]);
}

#[test]
fn junk_from_the_peer_is_ignored_but_a_foreign_opcode_ends_with_error_4() {
    let data = file(3000);
    let mut t = transfer(&data, &Options::default());
    let now = Instant::now();
    drain(&mut t, now);
    t.handle(now, client(), &[0, 4, 0]);
    assert!(drain(&mut t, now).is_empty());
    assert!(matches!(&events(&mut t)[..], [Event::Refused { reason: Refusal::Malformed(_), .. }]));
    t.handle(now, client(), &Packet::Data { block: 1, data: b"x" }.to_vec());
    let out = drain(&mut t, now);
    assert!(matches!(Packet::decode(&out[0].1), Ok(Packet::Error { code: ErrorCode::IllegalOperation, .. })));
    assert_eq!(events(&mut t), vec![Event::Failed(Failure::Unexpected(Opcode::Data))]);
    assert!(t.is_finished());
}

#[test]
fn netascii_transfers_expand_line_ends_and_offer_no_tsize() {
    let data = b"line one\nline two\r\n".to_vec();
    let mut t =
        Transfer::new(client(), Mode::NetAscii, &opts(None, None, Some(0)), &data[..], Some(20), &Default::default());
    let now = Instant::now();
    let out = drain(&mut t, now);
    let Ok(Packet::Data { block: 1, data: got }) = Packet::decode(&out[0].1) else { panic!("{out:?}") };
    assert_eq!(got, b"line one\r\nline two\r\0\r\n");
}

#[test]
fn a_read_error_ends_the_transfer_with_error_0() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let mut t = Transfer::new(client(), Mode::Octet, &Options::default(), Broken, None, &Default::default());
    let mut buf = vec![0; MAX_DATAGRAM];
    let tx = t.poll_transmit(Instant::now(), &mut buf).unwrap();
    assert!(matches!(Packet::decode(&buf[..tx.size]), Ok(Packet::Error { code: ErrorCode::NotDefined, .. })));
    assert_eq!(t.poll(), Some(Event::Failed(Failure::Read(io::ErrorKind::Other))));
    assert!(t.is_finished());
}

#[test]
fn a_buffer_shorter_than_a_block_fails_instead_of_panicking() {
    let data = file(3000);
    let mut t = transfer(&data, &Options::default());
    assert_eq!(t.poll_transmit(Instant::now(), &mut [0; 100]), None);
    assert_eq!(t.poll(), Some(Event::Failed(Failure::BufferTooSmall)));
}
