//! Unit tests of the sender: merging, pacing, throttling, events, and
//! refusing what does not belong to the session.

use super::*;
use crate::mcast::wire::{Block, IndexRanges};

const S: SessionId = SessionId(77);
const MS: Duration = Duration::from_millis(1);

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 4000))
}

fn packet(message: Message<'_>) -> Vec<u8> {
    Packet { session: S, message }.encode()
}

fn chunks(r: u64, indices: impl IntoIterator<Item = u32>) -> Vec<u8> {
    packet(Message::RequestChunks { receiver: ReceiverId(r), chunks: IndexRanges::from_ascending(indices) })
}

fn blocks(r: u64, chunk: u32, indices: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let blocks = IndexRanges::from_ascending(indices);
    packet(Message::RequestBlocks { receiver: ReceiverId(r), chunk, blocks })
}

fn sender(sizes: Vec<u32>) -> Sender {
    Sender::new(SenderConfig::new(10_000_000), S, sizes, Time::ZERO).unwrap()
}

/// Sends everything the sender will send by `until`, stepping through its
/// timeouts; returns the blocks as `(chunk, index)` and the status seqs.
fn run(s: &mut Sender, from: Time, until: Time) -> (Vec<(u32, u32)>, Vec<u64>) {
    let (mut blocks, mut statuses) = (Vec::new(), Vec::new());
    let mut now = from;
    let mut buf = Vec::new();
    while now <= until {
        s.handle_timeout(now);
        while let Some(t) = s.poll_transmit(now, &mut buf) {
            assert_eq!(t.size, buf.len());
            if let Some(p) = t.payload {
                buf.extend((0..p.len).map(|i| (p.offset + i) as u8));
            }
            match Packet::decode(&buf).expect("the sender writes valid packets").message {
                Message::Block(Block { chunk, index, payload, .. }) => {
                    let p = t.payload.expect("blocks name their payload");
                    assert_eq!((p.chunk, p.len as usize), (chunk, payload.len()));
                    assert_eq!(p.offset, index * BLOCK_SIZE as u32);
                    blocks.push((chunk, index));
                }
                Message::Status(st) => statuses.push(st.seq),
                other => panic!("sender sent {other:?}"),
            }
        }
        now = s.poll_timeout().expect("the sender always has a timer").max(now + Duration::from_nanos(1));
    }
    (blocks, statuses)
}

#[test]
fn the_sender_announces_itself_and_sends_nothing_unasked() {
    let mut s = sender(vec![5000, 10]);
    let (blocks, statuses) = run(&mut s, Time::ZERO, Time::ZERO + Duration::from_millis(2500));
    assert!(blocks.is_empty());
    assert_eq!(statuses, vec![0, 1, 2], "at 0, 1 s and 2 s");
}

#[test]
fn many_receivers_asking_for_a_chunk_cost_one_transmission() {
    let mut s = sender(vec![5000, 3000, 100]);
    for r in 1..=20 {
        s.handle(Time::ZERO, addr(r), &chunks(u64::from(r), [0, 2]));
        s.handle(Time::ZERO, addr(r), &blocks(u64::from(r), 0, [1, 3]));
    }
    let (sent, _) = run(&mut s, Time::ZERO, Time::ZERO + 50 * MS);
    assert_eq!(sent, vec![(0, 0), (0, 1), (0, 2), (0, 3), (2, 0)]);
    assert_eq!(s.stats().resend_blocks, 0, "blocks already pending are not re-sends");
    assert_eq!(s.receivers(), 20);
}

#[test]
fn the_token_bucket_holds_the_rate() {
    let mut config = SenderConfig::new(1_000_000);
    config.initial_rate = 1_000_000;
    let sizes = vec![crate::chunk::MAX_CHUNK_BYTES as u32; 4];
    let mut s = Sender::new(config, S, sizes, Time::ZERO).unwrap();
    s.handle(Time::ZERO, addr(1), &chunks(1, 0..4));
    let (sent, _) = run(&mut s, Time::ZERO, Time::ZERO + Duration::from_secs(1));
    let bytes = sent.len() * (BLOCK_HEADER_LEN + BLOCK_SIZE);
    // One second at the rate plus what the bucket held at the start.
    assert!(bytes <= 1_000_000 + 2 * 1438 + 2 * 1438, "{bytes} bytes in one second");
    assert!(bytes >= 950_000, "{bytes} bytes in one second");
}

#[test]
fn out_of_range_requests_and_foreign_packets_are_counted_and_dropped() {
    let mut s = sender(vec![5000]);
    s.handle(Time::ZERO, addr(1), &chunks(1, [0, 1]));
    s.handle(Time::ZERO, addr(1), &blocks(1, 1, [0]));
    s.handle(Time::ZERO, addr(1), &blocks(1, 0, [4]));
    s.handle(Time::ZERO, addr(1), b"not a packet");
    let foreign = Packet { session: SessionId(1), message: Message::Join { receiver: ReceiverId(1) } };
    s.handle(Time::ZERO, addr(1), &foreign.encode());
    let payload = [0u8; 10];
    s.handle(Time::ZERO, addr(1), &packet(Message::Block(Block { chunk: 0, index: 0, count: 1, payload: &payload })));
    let st = s.stats();
    assert_eq!((st.bad_requests, st.malformed, st.foreign_session, st.ignored), (3, 1, 1, 1));
    assert_eq!(s.pending_blocks(), 0);
}

#[test]
fn a_flooding_receiver_is_throttled_and_others_still_get_through() {
    let mut config = SenderConfig::new(10_000_000);
    config.receiver_messages_per_sec = 100;
    config.receiver_message_burst = 10;
    let mut s = Sender::new(config, S, vec![5000; 8], Time::ZERO).unwrap();
    for i in 0..1000u64 {
        s.handle(Time::from_nanos(i * 1000), addr(9), &chunks(9, [(i % 8) as u32]));
    }
    assert_eq!(s.stats().throttled, 990);
    s.handle(Time::from_nanos(1_000_000), addr(1), &chunks(1, [7]));
    assert_eq!(s.stats().throttled, 990);
    assert_eq!(s.stats().chunk_requests, 11);
}

#[test]
fn receivers_beyond_the_tracked_limit_share_one_budget() {
    let mut s = sender(vec![5000]);
    for r in 0..(MAX_TRACKED_RECEIVERS as u64 + 5000) {
        s.handle(Time::ZERO, addr(1), &packet(Message::Join { receiver: ReceiverId(r) }));
    }
    assert_eq!(s.receivers(), MAX_TRACKED_RECEIVERS);
    assert_eq!(s.stats().throttled, 5000 - 1000);
    assert!(std::iter::from_fn(|| s.poll()).count() <= MAX_EVENTS);
}

#[test]
fn joins_leaves_reports_and_silence_become_events() {
    let mut s = sender(vec![5000]);
    s.handle(Time::ZERO, addr(1), &packet(Message::Join { receiver: ReceiverId(1) }));
    s.handle(Time::ZERO, addr(2), &chunks(2, [0]));
    let report = Report {
        receiver: ReceiverId(1),
        bytes_received: 5000,
        duplicate_blocks: 0,
        requests_sent: 1,
        chunks_done: 1,
        done: true,
    };
    s.handle(Time::ZERO, addr(1), &packet(Message::Report(report)));
    s.handle(Time::ZERO, addr(1), &packet(Message::Leave { receiver: ReceiverId(1) }));
    let events: Vec<Event> = std::iter::from_fn(|| s.poll()).collect();
    assert_eq!(
        events,
        vec![
            Event::Joined { receiver: ReceiverId(1), from: addr(1) },
            Event::Joined { receiver: ReceiverId(2), from: addr(2) },
            Event::Report(report),
            Event::Left { receiver: ReceiverId(1) },
        ]
    );
    s.handle_timeout(Time::ZERO + RECEIVER_TIMEOUT + Duration::from_secs(1));
    assert_eq!(s.poll(), Some(Event::Lost { receiver: ReceiverId(2) }));
}

#[test]
fn idle_is_reported_once_when_nothing_is_asked_or_left_to_send() {
    let mut config = SenderConfig::new(10_000_000);
    config.idle_timeout = Duration::from_secs(3);
    let mut s = Sender::new(config, S, vec![5000], Time::ZERO).unwrap();
    s.handle(Time::ZERO + Duration::from_secs(2), addr(1), &chunks(1, [0]));
    run(&mut s, Time::ZERO, Time::ZERO + Duration::from_millis(4900));
    assert_eq!(std::iter::from_fn(|| s.poll()).filter(|e| *e == Event::Idle).count(), 0);
    run(&mut s, Time::ZERO + Duration::from_secs(5), Time::ZERO + Duration::from_secs(20));
    assert_eq!(std::iter::from_fn(|| s.poll()).filter(|e| *e == Event::Idle).count(), 1);
    s.handle(Time::ZERO + Duration::from_secs(21), addr(1), &chunks(1, [0]));
    run(&mut s, Time::ZERO + Duration::from_secs(21), Time::ZERO + Duration::from_secs(30));
    assert_eq!(std::iter::from_fn(|| s.poll()).filter(|e| *e == Event::Idle).count(), 1);
}

#[test]
fn heavy_resend_requests_slow_the_sender_down() {
    let mut s = sender(vec![crate::chunk::MAX_CHUNK_BYTES as u32; 2]);
    let start = s.rate();
    s.handle(Time::ZERO, addr(1), &chunks(1, [0, 1]));
    let mut now = Time::ZERO;
    for _ in 0..10 {
        let (sent, _) = run(&mut s, now, now + 100 * MS);
        now = now + 100 * MS;
        // Every block sent is reported lost.
        let lost: Vec<u32> = sent.iter().filter(|b| b.0 == 0).map(|b| b.1).collect();
        s.handle(now, addr(1), &blocks(1, 0, lost));
    }
    assert!(s.rate() < start / 2, "rate {} from {start}", s.rate());
    assert!(s.rate() >= SenderConfig::new(10_000_000).min_rate);
    assert!(s.stats().rate_decreases >= 3);
}

#[test]
fn bad_configurations_are_refused() {
    let bad = |f: fn(&mut SenderConfig)| {
        let mut c = SenderConfig::new(1_000_000);
        f(&mut c);
        Sender::new(c, S, vec![10], Time::ZERO).is_err()
    };
    assert!(bad(|c| c.max_rate = 100));
    assert!(bad(|c| c.min_rate = 0));
    assert!(bad(|c| c.initial_rate = c.max_rate + 1));
    assert!(bad(|c| c.status_interval = Duration::ZERO));
    assert!(bad(|c| c.receiver_message_burst = 0));
    assert!(Sender::new(SenderConfig::new(1_000_000), S, vec![], Time::ZERO).is_err());
    assert!(Sender::new(SenderConfig::new(1_000_000), S, vec![0], Time::ZERO).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Whatever is asked, handling the timeouts that are due and draining
    /// leaves the next timeout in the future: a caller never spins.
    #[test]
    fn timers_never_fall_behind(ops in proptest::collection::vec((0u8..4, 0u32..4, 0u32..40, 0u64..3000), 1..200)) {
        let sizes = vec![1, 3 * BLOCK_SIZE as u32, 5000, 40 * BLOCK_SIZE as u32];
        let mut config = SenderConfig::new(2_000_000);
        config.idle_timeout = Duration::from_millis(500);
        let mut s = Sender::new(config, S, sizes.clone(), Time::ZERO).unwrap();
        let mut now = Time::ZERO;
        let mut buf = Vec::new();
        for (op, chunk, n, us) in ops {
            now = now + Duration::from_micros(us * 300);
            let count = wire::block_count(sizes[chunk as usize]);
            match op {
                0 => s.handle(now, addr(1), &chunks(u64::from(n % 3), [chunk])),
                1 => s.handle(now, addr(1), &blocks(u64::from(n % 3), chunk, [n % count])),
                2 => now = now + Duration::from_secs(u64::from(n % 4)),
                _ => {}
            }
            // A deadline that a transmit made due (the work set emptying past
            // the idle time) may wake the caller once more, never twice.
            for _ in 0..2 {
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now);
                }
                while s.poll().is_some() {}
                while s.poll_transmit(now, &mut buf).is_some() {}
            }
            let next = s.poll_timeout().expect("the sender always has a timer");
            proptest::prop_assert!(next > now, "timer at {next:?} is not after {now:?}");
        }
    }
}

#[test]
fn busy_holds_back_new_chunks_but_not_the_one_under_way_nor_past_max_pause() {
    let csize = 4 * BLOCK_SIZE as u32;
    let mut s = sender(vec![csize; 3]);
    s.handle(Time::ZERO, addr(1), &chunks(1, [0, 1, 2]));
    // Chunk 0 under way: two of its blocks go, then a receiver is busy.
    let mut buf = Vec::new();
    let mut sent = Vec::new();
    while sent.len() < 2 {
        if let Some(t) = s.poll_transmit(Time::ZERO, &mut buf) {
            if let Some(p) = t.payload {
                sent.push(p.chunk);
            }
        }
    }
    s.handle(Time::ZERO, addr(2), &packet(Message::Busy { receiver: ReceiverId(2) }));
    let (during, _) = run(&mut s, Time::ZERO, Time::ZERO + 10 * MS);
    assert_eq!(during.iter().map(|b| b.0).collect::<Vec<_>>(), vec![0, 0], "only chunk 0's rest went: {during:?}");
    let (after, _) = run(&mut s, Time::ZERO + 16 * MS, Time::ZERO + 100 * MS);
    assert!(after.iter().any(|b| b.0 == 1), "the hold ended: {after:?}");
    assert_eq!(s.stats().busy_heard, 1);

    // A receiver busy on end is waited for at most max_pause, then not at all.
    let mut s = sender(vec![csize; 40]);
    s.handle(Time::ZERO, addr(1), &chunks(1, 0..40));
    let mut now = Time::ZERO;
    let mut blocks = 0;
    while now < Time::ZERO + 900 * MS {
        s.handle(now, addr(2), &packet(Message::Busy { receiver: ReceiverId(2) }));
        blocks += run(&mut s, now, now + 4 * MS).0.len();
        now = now + 5 * MS;
    }
    assert!(s.stats().busy_ignored > 0, "{:?}", s.stats());
    assert!(blocks > 4, "a receiver that stays busy stopped the session: {blocks} blocks");
}
