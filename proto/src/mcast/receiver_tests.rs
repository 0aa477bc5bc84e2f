//! Unit tests of the receiver: assembly, the memory bound, requests,
//! suppression, back-off, silence and refusing forged packets.

use super::*;
use crate::mcast::wire::{IndexRanges, Status, BLOCK_SIZE};

const S: SessionId = SessionId(77);
const ME: ReceiverId = ReceiverId(1);
const PEER: ReceiverId = ReceiverId(2);
const MS: Duration = Duration::from_millis(1);

fn from() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 4000))
}

fn at(ms: u64) -> Time {
    Time::ZERO + Duration::from_millis(ms)
}

/// Chunk `c`'s bytes in these tests.
fn content(c: u32, csize: u32) -> Vec<u8> {
    (0..csize).map(|i| (i as u8).wrapping_mul(7).wrapping_add(c as u8)).collect()
}

fn block(chunk: u32, index: u32, csize: u32) -> Vec<u8> {
    let (offset, len) = wire::block_span(csize, index).expect("test blocks exist");
    let data = content(chunk, csize);
    let payload = &data[offset as usize..(offset + len) as usize];
    let b = Block { chunk, index, count: wire::block_count(csize), payload };
    Packet { session: S, message: Message::Block(b) }.encode()
}

fn receiver(sizes: Vec<u32>, need: impl IntoIterator<Item = u32>, config: ReceiverConfig) -> Receiver {
    Receiver::new(config, S, ME, sizes, need, 9, Time::ZERO).unwrap()
}

fn sent(r: &mut Receiver) -> Vec<Message<'static>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = r.poll_transmit(Time::ZERO, &mut buf) {
        assert_eq!((t.size, t.payload), (buf.len(), None));
        let p = Packet::decode(&buf).expect("the receiver writes valid packets");
        assert_eq!(p.session, S);
        out.push(match p.message {
            Message::Join { receiver } => Message::Join { receiver },
            Message::Leave { receiver } => Message::Leave { receiver },
            Message::RequestChunks { receiver, chunks } => Message::RequestChunks { receiver, chunks },
            Message::RequestBlocks { receiver, chunk, blocks } => Message::RequestBlocks { receiver, chunk, blocks },
            Message::Report(r) => Message::Report(r),
            Message::Busy { receiver } => Message::Busy { receiver },
            other => panic!("receiver sent {other:?}"),
        });
    }
    out
}

fn asked_chunks(msgs: &[Message<'_>]) -> Vec<u32> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::RequestChunks { chunks, .. } => Some(chunks.indices().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn asked_blocks(msgs: &[Message<'_>]) -> Vec<(u32, Vec<u32>)> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::RequestBlocks { chunk, blocks, .. } => Some((*chunk, blocks.indices().collect())),
            _ => None,
        })
        .collect()
}

fn peer_asks_chunks(r: &mut Receiver, now: Time, chunks: impl IntoIterator<Item = u32>) {
    let m = Message::RequestChunks { receiver: PEER, chunks: IndexRanges::from_ascending(chunks) };
    r.handle(now, from(), &Packet { session: S, message: m }.encode());
}

#[test]
fn it_joins_then_asks_for_its_window_of_needed_chunks() {
    let config = ReceiverConfig { request_window: 3, ..ReceiverConfig::default() };
    let mut r = receiver(vec![100; 10], [1, 2, 4, 5, 6, 9], config);
    assert_eq!(sent(&mut r), vec![Message::Join { receiver: ME }]);
    r.handle_timeout(at(100));
    assert_eq!(asked_chunks(&sent(&mut r)), vec![1, 2, 4]);
}

#[test]
fn blocks_in_any_order_assemble_into_the_chunk() {
    let csize = 3 * BLOCK_SIZE as u32 + 5;
    let mut r = receiver(vec![10, csize], [1], ReceiverConfig::default());
    for i in [3, 1, 1, 0, 2] {
        r.handle(at(1), from(), &block(1, i, csize));
    }
    assert_eq!(r.poll(), Some(Event::Chunk { index: 1, bytes: content(1, csize) }));
    assert_eq!((r.stats().duplicate_blocks, r.stats().bytes_received), (1, u64::from(csize)));
    r.handle(at(2), from(), &block(1, 0, csize));
    assert_eq!(r.stats().unneeded_blocks, 1, "delivered chunks need no more blocks");
    r.chunk_done(at(3), 1);
    assert!(r.is_finished());
    assert_eq!(r.poll(), Some(Event::Done));
    let msgs = sent(&mut r);
    assert!(matches!(msgs[msgs.len() - 2], Message::Report(Report { done: true, chunks_done: 1, .. })));
    assert_eq!(msgs[msgs.len() - 1], Message::Leave { receiver: ME });
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn forged_and_inconsistent_packets_are_counted_and_dropped() {
    let csize = 2 * BLOCK_SIZE as u32;
    let mut r = receiver(vec![csize, 100], [0], ReceiverConfig::default());
    let forge = |chunk, index, count, len: usize| {
        let payload = vec![0xee; len];
        let b = Block { chunk, index, count, payload: &payload };
        Packet { session: S, message: Message::Block(b) }.encode()
    };
    r.handle(at(1), from(), &forge(5, 0, 1, 10)); // no such chunk
    r.handle(at(1), from(), &forge(0, 0, 3, BLOCK_SIZE)); // wrong block count
    r.handle(at(1), from(), &forge(0, 1, 2, 100)); // last block of the wrong length
    r.handle(
        at(1),
        from(),
        &Packet {
            session: S,
            message: Message::Status(Status { seq: 0, rate: 1, chunks_total: 9, backlog: 0, repair_backlog: 0 }),
        }
        .encode(),
    );
    assert_eq!(r.stats().invalid, 4);
    r.handle(at(1), from(), &forge(1, 0, 1, 100)); // a chunk it does not need
    assert_eq!(r.stats().unneeded_blocks, 1);
    let mut other = block(0, 0, csize);
    other[6] ^= 1; // another session
    r.handle(at(1), from(), &other);
    r.handle(at(1), from(), &[0xff; 40]);
    r.handle(at(1), from(), &[]);
    assert_eq!((r.stats().foreign_session, r.stats().malformed), (1, 2));
    assert_eq!(r.poll(), None);
    assert_eq!(r.stats().bytes_received, 0);
}

#[test]
fn a_stalled_partial_chunk_asks_for_exactly_its_missing_blocks() {
    let csize = 10 * BLOCK_SIZE as u32;
    let mut r = receiver(vec![csize], [0], ReceiverConfig::default());
    sent(&mut r);
    for i in [0, 1, 4, 5, 6, 9] {
        r.handle(at(1), from(), &block(0, i, csize));
    }
    r.handle_timeout(at(4));
    assert!(asked_blocks(&sent(&mut r)).is_empty(), "still streaming");
    r.handle_timeout(at(200));
    assert_eq!(asked_blocks(&sent(&mut r)), vec![(0, vec![2, 3, 7, 8])]);
}

#[test]
fn a_peer_request_suppresses_the_same_request_for_a_while() {
    let csize = 4 * BLOCK_SIZE as u32;
    let mut r = receiver(vec![csize, 100, 100], [0, 1, 2], ReceiverConfig::default());
    sent(&mut r);
    r.handle(at(1), from(), &block(0, 0, csize));
    peer_asks_chunks(&mut r, at(50), [1]);
    let m = Message::RequestBlocks { receiver: PEER, chunk: 0, blocks: IndexRanges::from_ascending([1, 2]) };
    r.handle(at(50), from(), &Packet { session: S, message: m }.encode());
    r.handle_timeout(at(60));
    let msgs = sent(&mut r);
    assert_eq!(asked_blocks(&msgs), vec![(0, vec![3])]);
    assert_eq!(asked_chunks(&msgs), vec![2]);
    assert!(r.stats().requests_suppressed >= 1);
    // Once the suppression has run out, everything still missing is asked.
    r.handle_timeout(at(400));
    let msgs = sent(&mut r);
    assert_eq!(asked_blocks(&msgs), vec![(0, vec![1, 2, 3])]);
    assert_eq!(asked_chunks(&msgs), vec![1, 2]);
}

#[test]
fn a_peer_asking_for_a_whole_chunk_covers_our_partial_of_it() {
    let csize = 4 * BLOCK_SIZE as u32;
    let mut r = receiver(vec![csize], [0], ReceiverConfig::default());
    r.handle(at(1), from(), &block(0, 0, csize));
    peer_asks_chunks(&mut r, at(40), [0]);
    r.handle_timeout(at(60));
    assert!(asked_blocks(&sent(&mut r)).is_empty());
}

#[test]
fn held_chunks_are_bounded_and_a_verdict_frees_room() {
    let config = ReceiverConfig { max_held_chunks: 1, ..ReceiverConfig::default() };
    let csize = 2 * BLOCK_SIZE as u32;
    let mut r = receiver(vec![csize; 3], [0, 1, 2], config);
    r.handle(at(1), from(), &block(0, 0, csize));
    r.handle(at(1), from(), &block(1, 0, csize));
    assert_eq!(r.stats().no_room_blocks, 1);
    r.handle(at(1), from(), &block(0, 1, csize));
    assert!(matches!(r.poll(), Some(Event::Chunk { index: 0, .. })));
    r.handle(at(1), from(), &block(1, 0, csize));
    assert_eq!(r.stats().no_room_blocks, 2, "a delivered chunk still holds its room");
    r.chunk_done(at(2), 0);
    r.handle(at(3), from(), &block(1, 0, csize));
    assert_eq!(r.stats().no_room_blocks, 2);
    let config = ReceiverConfig { max_held_bytes: 100, ..ReceiverConfig::default() };
    let err = Receiver::new(config, S, ME, vec![100, 101], [1], 0, Time::ZERO).err();
    assert_eq!(err, Some(ConfigError::ChunkOverBound { index: 1, csize: 101, max: 100 }));
}

#[test]
fn a_failed_chunk_is_asked_for_again() {
    let mut r = receiver(vec![100, 100], [0, 1], ReceiverConfig::default());
    sent(&mut r);
    r.handle_timeout(at(100));
    assert_eq!(asked_chunks(&sent(&mut r)), vec![0, 1]);
    r.handle(at(101), from(), &block(0, 0, 100));
    assert!(matches!(r.poll(), Some(Event::Chunk { index: 0, .. })));
    r.chunk_failed(at(102), 0);
    r.chunk_failed(at(102), 0);
    assert_eq!(r.stats().chunks_failed, 1, "only a delivered chunk can fail");
    r.handle_timeout(r.poll_timeout().unwrap());
    assert_eq!(asked_chunks(&sent(&mut r)), vec![0]);
}

#[test]
fn chunks_done_elsewhere_are_no_longer_asked_for() {
    let mut r = receiver(vec![100; 4], 0..4, ReceiverConfig::default());
    r.chunk_done(at(1), 1);
    r.chunk_done(at(1), 1);
    r.chunk_done(at(1), 99);
    r.handle_timeout(at(100));
    assert_eq!(asked_chunks(&sent(&mut r)), vec![0, 2, 3]);
    assert_eq!(r.remaining(), 3);
}

fn status(rate: u64, backlog: u64, repair_backlog: u64) -> Vec<u8> {
    let st = Status { seq: 0, rate, chunks_total: 2, backlog, repair_backlog };
    Packet { session: S, message: Message::Status(st) }.encode()
}

#[test]
fn a_busy_sender_makes_requests_stand_longer() {
    let csize = 4 * BLOCK_SIZE as u32;
    let mut r = receiver(vec![csize, 100], [0, 1], ReceiverConfig::default());
    sent(&mut r);
    // One second of backlog at the sender, a tenth of it repairs.
    let blocks_per_sec = 1_000_000 / 1438;
    r.handle(at(0), from(), &status(1_000_000, blocks_per_sec, blocks_per_sec / 10));
    r.handle(at(1), from(), &block(0, 0, csize));
    let mut asked = Vec::new();
    let mut now = at(1);
    while now < at(1500) {
        now = r.poll_timeout().unwrap();
        r.handle_timeout(now);
        r.handle(now, from(), &status(1_000_000, blocks_per_sec, blocks_per_sec / 10));
        for m in sent(&mut r) {
            asked.push((now, matches!(m, Message::RequestChunks { .. })));
        }
    }
    let chunk_asks: Vec<Time> = asked.iter().filter(|a| a.1).map(|a| a.0).collect();
    let repair_asks: Vec<Time> = asked.iter().filter(|a| !a.1).map(|a| a.0).collect();
    assert_eq!(chunk_asks.len(), 2, "once, then again after about a second: {chunk_asks:?}");
    assert!(repair_asks.len() >= 5, "repairs wait only for the repair backlog: {repair_asks:?}");
}

#[test]
fn back_off_grows_only_while_the_sender_is_unheard() {
    let config = ReceiverConfig { request_window: 1, ..ReceiverConfig::default() };
    let mut r = receiver(vec![100; 2], 0..2, config);
    let mut now = Time::ZERO;
    let mut rounds = 0;
    while now < at(3_000) {
        now = r.poll_timeout().unwrap();
        r.handle(now, from(), &status(1_000_000, 0, 0));
        r.handle_timeout(now);
        rounds += usize::from(!asked_chunks(&sent(&mut r)).is_empty());
    }
    assert!(rounds >= 30, "a heard sender is asked at the base interval: {rounds} rounds");
}

#[test]
fn unanswered_requests_back_off_and_hearing_the_sender_resets_the_interval() {
    let silence_timeout = Duration::from_secs(60);
    let config = ReceiverConfig { request_window: 1, silence_timeout, ..ReceiverConfig::default() };
    let mut r = receiver(vec![100; 200], 0..200, config);
    let mut rounds = Vec::new();
    let mut now = Time::ZERO;
    while now < at(20_000) {
        now = r.poll_timeout().unwrap();
        r.handle_timeout(now);
        if !asked_chunks(&sent(&mut r)).is_empty() {
            rounds.push(now);
        }
    }
    let gaps: Vec<Duration> = rounds.windows(2).map(|w| w[1].saturating_since(w[0])).collect();
    assert!(gaps.iter().rev().take(3).all(|&g| g >= Duration::from_secs(1)), "{gaps:?}");
    assert!(gaps.iter().all(|&g| g < Duration::from_secs(3)), "{gaps:?}");
    r.handle(now, from(), &block(0, 0, 100));
    r.handle(now, from(), &block(1, 0, 100));
    let round = r.poll_timeout().unwrap();
    r.handle_timeout(round);
    let next = r.poll_timeout().unwrap();
    assert!(next.saturating_since(round) < 100 * MS, "hearing the sender resets the back-off");
}

#[test]
fn a_silent_sender_is_not_asked_until_it_is_heard_again() {
    let mut r = receiver(vec![100; 2], 0..2, ReceiverConfig::default());
    let mut now = Time::ZERO;
    while now < at(6_000) {
        now = r.poll_timeout().unwrap();
        r.handle_timeout(now);
        sent(&mut r);
    }
    assert!(matches!(r.poll(), Some(Event::SenderSilent { .. })));
    let before = r.stats().requests_sent;
    while now < at(20_000) {
        now = r.poll_timeout().unwrap();
        r.handle_timeout(now);
    }
    assert_eq!(r.stats().requests_sent, before);
    r.handle(now, from(), &status(1_000_000, 0, 0));
    assert_eq!(r.poll(), Some(Event::SenderHeard));
    let mut asked = Vec::new();
    while asked.is_empty() {
        r.handle_timeout(r.poll_timeout().unwrap());
        asked = asked_chunks(&sent(&mut r));
    }
    assert_eq!(asked, vec![0, 1]);
}

#[test]
fn silence_is_reported_once_and_so_is_the_sender_coming_back() {
    let mut r = receiver(vec![100], [0], ReceiverConfig::default());
    let mut now = Time::ZERO;
    while now < at(12_000) {
        now = r.poll_timeout().unwrap();
        r.handle_timeout(now);
    }
    assert_eq!(r.poll(), Some(Event::SenderSilent { since: Time::ZERO }));
    assert_eq!(r.poll(), None);
    let status = Status { seq: 0, rate: 1, chunks_total: 1, backlog: 0, repair_backlog: 0 };
    r.handle(now, from(), &Packet { session: S, message: Message::Status(status) }.encode());
    assert_eq!(r.poll(), Some(Event::SenderHeard));
}

#[test]
fn own_packets_heard_back_are_ignored() {
    let mut r = receiver(vec![100; 4], 0..4, ReceiverConfig::default());
    r.handle_timeout(at(100));
    let mut buf = Vec::new();
    while r.poll_transmit(at(100), &mut buf).is_some() {
        r.handle(at(100), from(), &buf.clone());
    }
    assert_eq!(r.stats().own_echoes, 2);
    r.handle_timeout(at(400));
    assert_eq!(asked_chunks(&sent(&mut r)), vec![0, 1, 2, 3], "its own request does not suppress it for ever");
}

#[test]
fn nothing_needed_means_done_at_once() {
    let mut r = receiver(vec![100; 4], [], ReceiverConfig::default());
    assert!(r.is_finished());
    assert_eq!(r.poll(), Some(Event::Done));
    assert_eq!(sent(&mut r).len(), 2);
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn bad_configurations_are_refused() {
    let new = |c: ReceiverConfig, need: Vec<u32>| Receiver::new(c, S, ME, vec![100; 4], need, 0, Time::ZERO).err();
    assert_eq!(new(ReceiverConfig::default(), vec![4]), Some(ConfigError::NeedOutOfRange(4)));
    let zero_window = ReceiverConfig { request_window: 0, ..ReceiverConfig::default() };
    assert!(new(zero_window, vec![]).is_some());
    let wide_window = ReceiverConfig { request_window: MAX_RANGES as usize + 1, ..ReceiverConfig::default() };
    assert!(new(wide_window, vec![]).is_some());
    let inverted = ReceiverConfig { max_request_interval: MS, ..ReceiverConfig::default() };
    assert!(new(inverted, vec![]).is_some());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Whatever arrives, once a timeout is handled the next one is in the
    /// future: a caller sleeping until `poll_timeout` never spins.
    #[test]
    fn timers_never_fall_behind(ops in proptest::collection::vec((0u8..8, 0u32..4, 0u32..40, 0u64..3000), 1..200)) {
        let sizes = vec![1, 3 * BLOCK_SIZE as u32, 5000, 40 * BLOCK_SIZE as u32];
        let config = ReceiverConfig { max_held_chunks: 2, ..ReceiverConfig::default() };
        let mut r = receiver(sizes.clone(), 0..4, config);
        let mut now = Time::ZERO;
        for (op, chunk, n, ms) in ops {
            now = now + Duration::from_micros(ms * 700);
            let csize = sizes[chunk as usize];
            match op {
                0..=2 => r.handle(now, from(), &block(chunk, n % wire::block_count(csize), csize)),
                3 => r.handle(now, from(), &status(u64::from(n) * 100_000, u64::from(n) * 50, u64::from(n))),
                4 => peer_asks_chunks(&mut r, now, [chunk]),
                5 => {
                    let m = Message::RequestBlocks { receiver: PEER, chunk, blocks: IndexRanges::from_ascending([n]) };
                    r.handle(now, from(), &Packet { session: S, message: m }.encode());
                }
                6 => now = now + Duration::from_secs(u64::from(n % 8)),
                _ => {}
            }
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
            }
            while let Some(e) = r.poll() {
                if let Event::Chunk { index, .. } = e {
                    if n % 3 == 0 { r.chunk_failed(now, index) } else { r.chunk_done(now, index) }
                }
            }
            sent(&mut r);
            if let Some(t) = r.poll_timeout() {
                proptest::prop_assert!(t > now, "timer at {t:?} is not after {now:?}");
            }
            proptest::prop_assert!(r.held_chunks() <= 2);
        }
    }
}

#[test]
fn a_receiver_whose_writer_is_behind_says_busy_until_a_verdict_frees_room() {
    let config = ReceiverConfig { max_held_chunks: 2, ..ReceiverConfig::default() };
    let csize = BLOCK_SIZE as u32;
    let mut r = receiver(vec![csize; 4], [0, 1, 2, 3], config);
    sent(&mut r);
    r.handle(at(1), from(), &block(0, 0, csize));
    assert!(!sent(&mut r).iter().any(|m| matches!(m, Message::Busy { .. })), "one chunk out is not behind");
    r.handle(at(1), from(), &block(1, 0, csize));
    assert!(sent(&mut r).contains(&Message::Busy { receiver: ME }), "two chunks out and none written: busy");
    // Still full later: said again; written: not any more.
    r.handle_timeout(at(10));
    assert!(sent(&mut r).contains(&Message::Busy { receiver: ME }));
    r.chunk_done(at(11), 0);
    r.handle_timeout(at(20));
    assert!(!sent(&mut r).iter().any(|m| matches!(m, Message::Busy { .. })));
    assert_eq!(r.stats().busy_sent, 2);
}
