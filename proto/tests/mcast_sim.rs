//! One multicast sender and N receivers on a simulated network, in the
//! manner of quinn's tests: no sockets and a virtual clock. [`Net`] holds
//! datagrams in flight with their delivery times and jumps the clock to the
//! next delivery or the next timeout of any endpoint. Loss is seeded and
//! per receiver (its downlink, and its uplink for requests), reordering
//! comes from a random delay per delivery, and scenarios add late joiners,
//! restarts, a receiver that hears nothing for ten seconds, a request storm
//! and a forged block.
//!
//! Every scenario ends with every receiver having written every chunk it
//! needed, each checked by the "agent" in the harness against the image's
//! BLAKE3 (as the real agent does) and then asserted byte-identical to the
//! sender's. A failing seed is printed; `MCAST_SIM_SEED=n` replays one.
//! What this does not model: bandwidth limits and queueing in switches (so
//! loss never depends on the rate), IGMP, or more than one sender.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use shoal_proto::mcast::receiver::Event as RxEvent;
use shoal_proto::mcast::sender::Event as TxEvent;
use shoal_proto::mcast::wire::{self, Block, IndexRanges, Message, Packet, ReceiverId, SessionId};
use shoal_proto::mcast::{Receiver, ReceiverConfig, Sender, SenderConfig, Time, BLOCK_SIZE};
use shoal_proto::ChunkHash;

const SESSION: SessionId = SessionId(0x5e55_1011);
/// Endpoint 0 is the sender, 1..=N the receivers, N+1 a rogue (storm or
/// forger) that only sends.
const SENDER: usize = 0;
const LATENCY: Duration = Duration::from_micros(100);
/// Virtual time after which a run counts as stuck.
const LIMIT: Duration = Duration::from_secs(600);
const DEAF_FOR: Duration = Duration::from_secs(10);
/// The storm's pace: 20 000 datagrams a second to the group, 12 000 of
/// them requests from one receiver id, and bursts of [`STORM_BURST`] more
/// requests straight at the sender.
const STORM_EVERY: Duration = Duration::from_micros(50);
const STORM_BURST: usize = 10;
/// Random bytes chunks are cut from; larger than any chunk.
const POOL: usize = 64 << 10;

/// SplitMix64: the simulation's only randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Scenario {
    receivers: usize,
    /// Chunks in the image, and blocks per chunk at most.
    chunks: (u64, u64),
    max_blocks: u64,
    /// Each receiver's loss is drawn from 0..=this, per mille.
    max_loss: u64,
    /// Extra delay per delivery, drawn from 0..=this: reordering.
    jitter: Duration,
    loopback: bool,
    /// The last receiver joins when the first has half the image.
    late_joiner: bool,
    /// The last receiver restarts when it has 40% of the image.
    restart: bool,
    /// The last receiver hears nothing for [`DEAF_FOR`] from 25%.
    deaf: bool,
    /// A rogue floods requests, garbage and forged ids every [`STORM_EVERY`].
    storm: bool,
    /// A rogue sends a forged block of chunk 0 before anything else.
    forge: bool,
    /// Chunks a receiver may hold, if not the default.
    held: Option<usize>,
    /// Receivers are processes that take time: each datagram costs
    /// [`SERVICE`], one in [`STALL_ONE_IN`] stalls the process for
    /// [`STALL`] (descheduled, or writing), and datagrams wait in a socket
    /// buffer of [`SOCKET_BUFFER`] datagrams, past which they are dropped.
    busy: bool,
}

const SERVICE: Duration = Duration::from_micros(20);
const STALL: Duration = Duration::from_millis(15);
const STALL_ONE_IN: u64 = 500;
const SOCKET_BUFFER: u64 = 2000;

struct Flight {
    at: Time,
    seq: u64,
    to: usize,
    from: usize,
    bytes: Rc<[u8]>,
}

impl PartialEq for Flight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Flight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A receiving node: the state machine, its "disk", and what it saw.
struct Node {
    rx: Option<Receiver>,
    loss: u64,
    written: Vec<bool>,
    wake: Option<Time>,
    done: bool,
    silent_events: u32,
    heard_events: u32,
    failed: u64,
    /// With [`Scenario::busy`]: when the process is done with what it has
    /// been given so far, and what its socket buffer dropped.
    busy_until: Time,
    overflows: u64,
}

impl Node {
    /// When the node's timers run: at its receiver's timeout, but not
    /// before a busy process has drained its socket buffer (as the agent
    /// reads every datagram waiting before it looks at its timers).
    fn timer(&self) -> Option<Time> {
        self.wake.map(|t| t.max(self.busy_until))
    }
}

struct Net {
    seed: u64,
    sc: Scenario,
    rng: Rng,
    now: Time,
    chunks: Vec<Vec<u8>>,
    hashes: Vec<ChunkHash>,
    sender: Sender,
    config: ReceiverConfig,
    nodes: Vec<Node>,
    flights: BinaryHeap<Reverse<Flight>>,
    seq: u64,
    dirty: Vec<usize>,
    buf: Vec<u8>,
    storm_next: Option<Time>,
    deaf: Option<(Time, Time)>,
    restarted: bool,
    /// Every datagram sent, when recording.
    recorded: Option<Vec<Rc<[u8]>>>,
}

fn addr(endpoint: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (endpoint >> 8) as u8, endpoint as u8], 7000))
}

impl Net {
    fn new(seed: u64, sc: Scenario) -> Net {
        let mut rng = Rng(seed);
        let n = rng.range(sc.chunks.0, sc.chunks.1) as usize;
        // Chunks are cut from a random pool at random offsets: cheap, and
        // no two blocks of a chunk are alike, so a misplaced block shows.
        let pool: Vec<u8> = (0..POOL / 8).flat_map(|_| rng.next().to_le_bytes()).collect();
        let chunks: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let len = rng.range(1, sc.max_blocks * BLOCK_SIZE as u64) as usize;
                let at = rng.range(0, (POOL - len) as u64) as usize;
                pool[at..at + len].to_vec()
            })
            .collect();
        let hashes = chunks.iter().map(|c| ChunkHash::of(c)).collect();
        let sizes: Vec<u32> = chunks.iter().map(|c| c.len() as u32).collect();
        let mut config = SenderConfig::new(20_000_000);
        config.idle_timeout = Duration::from_secs(2);
        let sender = Sender::new(config, SESSION, sizes, Time::ZERO).expect("valid sender");
        let nodes = (0..sc.receivers)
            .map(|_| Node {
                rx: None,
                loss: rng.range(0, sc.max_loss),
                written: vec![false; n],
                wake: None,
                done: false,
                silent_events: 0,
                heard_events: 0,
                failed: 0,
                busy_until: Time::ZERO,
                overflows: 0,
            })
            .collect();
        let storm_next = sc.storm.then_some(Time::ZERO);
        let mut config = ReceiverConfig::default();
        if let Some(held) = sc.held {
            (config.max_held_chunks, config.request_window) = (held, held);
        }
        let mut net = Net {
            seed,
            sc,
            rng,
            now: Time::ZERO,
            chunks,
            hashes,
            sender,
            config,
            nodes,
            flights: BinaryHeap::new(),
            seq: 0,
            dirty: Vec::new(),
            buf: Vec::new(),
            storm_next,
            deaf: None,
            restarted: false,
            recorded: None,
        };
        let first_late = if sc.late_joiner { sc.receivers - 1 } else { sc.receivers };
        for i in 0..first_late {
            net.start(i);
        }
        if sc.forge {
            net.forge();
        }
        net
    }

    fn rogue(&self) -> usize {
        self.sc.receivers + 1
    }

    /// (Re)starts receiver `i` as a new process needing what it lacks.
    fn start(&mut self, i: usize) {
        let need: Vec<u32> = (0..self.chunks.len() as u32).filter(|&c| !self.nodes[i].written[c as usize]).collect();
        let sizes = self.chunks.iter().map(|c| c.len() as u32).collect();
        let id = ReceiverId(self.rng.next());
        let rx = Receiver::new(self.config.clone(), SESSION, id, sizes, need, self.rng.next(), self.now);
        self.nodes[i].rx = Some(rx.expect("valid receiver"));
        self.dirty.push(i);
    }

    /// Queues a datagram from `from` to every other endpoint (and back to
    /// itself with loopback), each copy lost or delayed on its own.
    fn multicast(&mut self, from: usize, bytes: &[u8]) {
        if from != SENDER && from <= self.sc.receivers && self.rng.chance(self.nodes[from - 1].loss) {
            return;
        }
        let bytes: Rc<[u8]> = Rc::from(bytes);
        if let Some(r) = self.recorded.as_mut() {
            r.push(bytes.clone());
        }
        for to in 0..=self.sc.receivers {
            if (to == from && !self.sc.loopback) || (to != SENDER && self.nodes[to - 1].rx.is_none()) {
                continue;
            }
            if to != SENDER && (self.nodes[to - 1].done || self.rng.chance(self.nodes[to - 1].loss)) {
                continue;
            }
            let jitter = self.rng.range(0, self.sc.jitter.as_nanos() as u64);
            let mut at = self.now + LATENCY + Duration::from_nanos(jitter);
            if self.sc.busy && to != SENDER {
                let stall = if self.rng.next() % STALL_ONE_IN == 0 { STALL } else { Duration::ZERO };
                let node = &mut self.nodes[to - 1];
                let start = node.busy_until.max(at);
                if start.saturating_since(at) > SERVICE * SOCKET_BUFFER as u32 {
                    node.overflows += 1;
                    continue;
                }
                node.busy_until = start + SERVICE + stall;
                at = node.busy_until;
            }
            self.seq += 1;
            self.flights.push(Reverse(Flight { at, seq: self.seq, to, from, bytes: bytes.clone() }));
        }
    }

    fn forge(&mut self) {
        let csize = self.chunks[0].len() as u32;
        let (_, len) = wire::block_span(csize, 0).expect("every chunk has a block 0");
        let payload: Vec<u8> = self.chunks[0][..len as usize].iter().map(|b| !b).collect();
        let block = Block { chunk: 0, index: 0, count: wire::block_count(csize), payload: &payload };
        let bytes: Rc<[u8]> = Packet { session: SESSION, message: Message::Block(block) }.encode().into();
        for to in 1..=self.sc.receivers {
            self.seq += 1;
            // Spoofed as the sender, delivered before any real block.
            self.flights.push(Reverse(Flight {
                at: Time::ZERO,
                seq: self.seq,
                to,
                from: SENDER,
                bytes: bytes.clone(),
            }));
        }
    }

    fn storm(&mut self) {
        let n = self.chunks.len() as u32;
        let kind = self.rng.next() % 5;
        // One flooding receiver asks; forged ids join by the thousand.
        let id = ReceiverId(if kind == 3 { self.rng.next() } else { 666 });
        let bytes = match kind {
            0 => Packet {
                session: SESSION,
                message: Message::RequestChunks { receiver: id, chunks: IndexRanges::from_ascending(0..n) },
            }
            .encode(),
            1 => {
                let chunk = (self.rng.next() % u64::from(n)) as u32;
                let blocks =
                    IndexRanges::from_ascending(0..wire::block_count(self.chunks[chunk as usize].len() as u32));
                Packet { session: SESSION, message: Message::RequestBlocks { receiver: id, chunk, blocks } }.encode()
            }
            2 => Packet {
                session: SESSION,
                message: Message::RequestChunks { receiver: id, chunks: IndexRanges::from_ascending([n + 5]) },
            }
            .encode(),
            3 => Packet { session: SESSION, message: Message::Join { receiver: id } }.encode(),
            _ => (0..self.rng.range(0, 80)).map(|_| self.rng.next() as u8).collect(),
        };
        self.multicast(self.rogue(), &bytes);
        // And a burst straight at the sender, as a host bent on it would.
        let flood: Rc<[u8]> = Packet {
            session: SESSION,
            message: Message::RequestChunks { receiver: ReceiverId(666), chunks: IndexRanges::from_ascending(0..n) },
        }
        .encode()
        .into();
        for _ in 0..STORM_BURST {
            self.seq += 1;
            let at = self.now + LATENCY;
            self.flights.push(Reverse(Flight {
                at,
                seq: self.seq,
                to: SENDER,
                from: self.rogue(),
                bytes: flood.clone(),
            }));
        }
    }

    fn service_sender(&mut self) {
        while let Some(e) = self.sender.poll() {
            assert!(!matches!(e, TxEvent::Idle) || self.sender.pending_blocks() == 0);
        }
        while let Some(t) = self.sender.poll_transmit(self.now, &mut self.buf) {
            let mut dgram = std::mem::take(&mut self.buf);
            if let Some(p) = t.payload {
                let (start, end) = (p.offset as usize, (p.offset + p.len) as usize);
                dgram.extend_from_slice(&self.chunks[p.chunk as usize][start..end]);
            }
            self.multicast(SENDER, &dgram);
            self.buf = dgram;
        }
    }

    /// Plays the agent for receiver `i`: verify, write, answer; send.
    fn service_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(rx) = node.rx.as_mut() else { return };
        let mut out = Vec::new();
        while let Some(e) = rx.poll() {
            match e {
                RxEvent::Chunk { index, bytes } => {
                    if ChunkHash::of(&bytes) == self.hashes[index as usize] {
                        assert_eq!(bytes, self.chunks[index as usize], "seed {}: verified chunk differs", self.seed);
                        node.written[index as usize] = true;
                        rx.chunk_done(self.now, index);
                    } else {
                        node.failed += 1;
                        rx.chunk_failed(self.now, index);
                    }
                }
                RxEvent::SenderSilent { .. } => node.silent_events += 1,
                RxEvent::SenderHeard => node.heard_events += 1,
                RxEvent::Done => node.done = true,
            }
        }
        while let Some(t) = rx.poll_transmit(self.now, &mut self.buf) {
            assert_eq!((t.size, t.payload), (self.buf.len(), None));
            out.push(self.buf.clone());
        }
        let config = &self.config;
        let held = (rx.held_chunks(), rx.held_bytes());
        assert!(
            held.0 <= config.max_held_chunks && held.1 <= config.max_held_bytes,
            "seed {}: over the bound",
            self.seed
        );
        node.wake = rx.poll_timeout();
        for dgram in out {
            self.multicast(i + 1, &dgram);
        }
    }

    fn deliver(&mut self, f: Flight) {
        if f.to == SENDER {
            self.sender.handle(self.now, addr(f.from), &f.bytes);
            return;
        }
        let i = f.to - 1;
        let deaf =
            self.deaf.is_some_and(|(from, until)| i == self.sc.receivers - 1 && self.now >= from && self.now < until);
        if let (Some(rx), false) = (self.nodes[i].rx.as_mut(), deaf) {
            rx.handle(self.now, addr(f.from), &f.bytes);
            self.dirty.push(i);
        }
    }

    /// Starts the late joiner, restarts or deafens the last receiver when
    /// progress says it is time.
    fn scenario_triggers(&mut self) {
        let n = self.chunks.len();
        let last = self.sc.receivers - 1;
        let done = |node: &Node| node.written.iter().filter(|&&w| w).count();
        if self.sc.late_joiner && self.nodes[last].rx.is_none() && done(&self.nodes[0]) * 2 >= n {
            self.start(last);
        }
        if self.sc.restart && !self.restarted && done(&self.nodes[last]) * 5 >= n * 2 && !self.nodes[last].done {
            self.restarted = true;
            self.start(last);
        }
        if self.sc.deaf && self.deaf.is_none() && done(&self.nodes[last]) * 4 >= n && !self.nodes[last].done {
            self.deaf = Some((self.now, self.now + DEAF_FOR));
        }
    }

    fn run(&mut self) {
        let mut steps = 0u64;
        loop {
            self.service_sender();
            while let Some(i) = self.dirty.pop() {
                self.service_node(i);
            }
            self.scenario_triggers();
            while let Some(i) = self.dirty.pop() {
                self.service_node(i);
            }
            if self.nodes.iter().all(|n| n.done) {
                return;
            }
            let mut next = self.sender.poll_timeout().expect("the sender always has a timer");
            next = self.nodes.iter().filter_map(|n| n.timer()).fold(next, Time::min);
            if let Some(Reverse(f)) = self.flights.peek() {
                next = next.min(f.at);
            }
            if let Some(s) = self.storm_next {
                next = next.min(s);
            }
            steps += 1;
            assert!(next.as_duration() < LIMIT && steps < 20_000_000, "seed {}: stuck: {}", self.seed, self.progress());
            self.now = self.now.max(next);
            while self.flights.peek().is_some_and(|Reverse(f)| f.at <= self.now) {
                let Some(Reverse(f)) = self.flights.pop() else { break };
                self.deliver(f);
            }
            if self.sender.poll_timeout().is_some_and(|t| t <= self.now) {
                self.sender.handle_timeout(self.now);
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].timer().is_some_and(|t| t <= self.now) {
                    if let Some(rx) = self.nodes[i].rx.as_mut() {
                        rx.handle_timeout(self.now);
                    }
                    self.dirty.push(i);
                }
            }
            if self.storm_next.is_some_and(|t| t <= self.now) {
                self.storm();
                self.storm_next = Some(self.now + STORM_EVERY);
            }
        }
    }

    fn progress(&self) -> String {
        let left: Vec<usize> = self.nodes.iter().map(|n| n.written.iter().filter(|&&w| !w).count()).collect();
        format!("at {:?}, chunks left per receiver {left:?}, sender {:?}", self.now.as_duration(), self.sender.stats())
    }

    /// Blocks in the image: what one loss-free pass sends.
    fn image_blocks(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(wire::block_count(c.len() as u32))).sum()
    }

    fn assert_everyone_has_the_image(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            assert!(node.done, "seed {}: receiver {i} not done", self.seed);
            assert!(node.written.iter().all(|&w| w), "seed {}: receiver {i} lacks chunks", self.seed);
        }
    }
}

/// Runs `seeds` seeds of a scenario (or only `MCAST_SIM_SEED`), checks the
/// end state and hands each finished net to `check`.
fn simulate(name: &str, seeds: u64, sc: Scenario, check: impl Fn(&Net)) {
    let only = std::env::var("MCAST_SIM_SEED").ok().and_then(|s| s.parse::<u64>().ok());
    let summary = std::env::var_os("MCAST_SIM_STATS").is_some();
    let base = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let (mut ratio, mut worst, mut secs, mut longest, mut runs) = (0.0, 0.0f64, 0.0, 0.0f64, 0);
    for seed in (0..seeds).map(|s| base.wrapping_add(s)).filter(|s| only.unwrap_or(*s) == *s) {
        let sc = Scenario { loopback: sc.loopback || seed % 2 == 0, ..sc };
        let mut net = Net::new(seed, sc);
        net.run();
        net.assert_everyone_has_the_image();
        check(&net);
        let r = net.sender.stats().blocks_sent as f64 / net.image_blocks() as f64;
        let t = net.now.as_duration().as_secs_f64();
        (ratio, worst, secs, longest, runs) = (ratio + r, worst.max(r), secs + t, longest.max(t), runs + 1);
    }
    if summary && runs > 0 {
        let n = f64::from(runs);
        eprintln!(
            "{name}: {runs} runs; blocks sent / image: mean {:.2}, worst {worst:.2}; virtual s: mean {:.2}, worst {longest:.2}",
            ratio / n,
            secs / n
        );
    }
}

const SMALL: Scenario = Scenario {
    receivers: 1,
    chunks: (10, 40),
    max_blocks: 30,
    max_loss: 0,
    jitter: Duration::from_micros(50),
    loopback: false,
    late_joiner: false,
    restart: false,
    deaf: false,
    storm: false,
    forge: false,
    held: None,
    busy: false,
};

#[test]
fn one_receiver_gets_every_chunk_under_loss() {
    simulate("one", 1000, Scenario { max_loss: 300, ..SMALL }, |_| {});
}

#[test]
fn eight_receivers_get_every_chunk_under_independent_loss() {
    simulate("eight", 200, Scenario { receivers: 8, max_loss: 300, ..SMALL }, |_| {});
}

#[test]
fn sixty_four_receivers_get_every_chunk_under_loss() {
    let sc = Scenario { receivers: 64, chunks: (10, 20), max_blocks: 12, max_loss: 300, ..SMALL };
    simulate("sixty-four", 20, sc, |_| {});
}

#[test]
fn loss_free_requests_merge_so_the_image_goes_out_about_once() {
    for (receivers, seeds) in [(1, 300), (8, 150)] {
        simulate("efficiency", seeds, Scenario { receivers, ..SMALL }, |net| {
            let (sent, image) = (net.sender.stats().blocks_sent, net.image_blocks());
            assert!(sent * 10 <= image * 11, "seed {}: {sent} blocks sent for {image}", net.seed);
        });
    }
}

#[test]
fn busy_receivers_that_fall_behind_the_stream_still_get_the_image_about_once() {
    for (receivers, seeds) in [(1, 100), (8, 50)] {
        let sc = Scenario { receivers, chunks: (20, 40), busy: true, ..SMALL };
        simulate("busy", seeds, sc, |net| {
            let (sent, image) = (net.sender.stats().blocks_sent, net.image_blocks());
            let dropped: u64 = net.nodes.iter().map(|n| n.overflows).sum();
            assert!(
                sent * 100 <= image * 105,
                "seed {}: {sent} blocks sent for {image} ({dropped} overflows)",
                net.seed
            );
        });
    }
}

#[test]
fn receivers_holding_two_chunks_at_most_still_finish() {
    let sc = Scenario { receivers: 8, max_loss: 200, held: Some(2), ..SMALL };
    simulate("tight", 80, sc, |_| {});
}

#[test]
fn heavy_reordering_does_not_stop_anyone() {
    let sc = Scenario { receivers: 8, max_loss: 100, jitter: Duration::from_millis(5), ..SMALL };
    simulate("reorder", 100, sc, |_| {});
}

#[test]
fn a_receiver_joining_halfway_still_finishes() {
    let sc = Scenario { receivers: 5, max_loss: 150, late_joiner: true, ..SMALL };
    simulate("late", 150, sc, |_| {});
}

#[test]
fn a_restarted_receiver_fetches_only_what_it_lacked() {
    let sc = Scenario { receivers: 4, max_loss: 150, restart: true, ..SMALL };
    simulate("restart", 150, sc, |net| assert!(net.restarted, "seed {}: never restarted", net.seed));
}

#[test]
fn a_receiver_deaf_for_ten_seconds_reports_silence_then_recovers() {
    let sc = Scenario { receivers: 4, max_loss: 100, deaf: true, ..SMALL };
    simulate("deaf", 60, sc, |net| {
        let deaf = &net.nodes[net.sc.receivers - 1];
        assert!(net.deaf.is_some(), "seed {}: never deafened", net.seed);
        assert!(deaf.silent_events >= 1 && deaf.heard_events >= 1, "seed {}: no silence reported", net.seed);
        assert!(net.nodes[0].silent_events == 0, "seed {}: a hearing receiver reported silence", net.seed);
    });
}

#[test]
fn a_request_storm_neither_stops_the_others_nor_the_sender() {
    let sc = Scenario { receivers: 6, max_loss: 100, storm: true, ..SMALL };
    simulate("storm", 30, sc, |net| {
        let st = net.sender.stats();
        assert!(st.malformed > 0 && st.bad_requests > 0, "seed {}: the storm did not reach the sender", net.seed);
        assert!(st.throttled > 0, "seed {}: a flooding receiver was not throttled", net.seed);
        assert!(net.sender.queued_chunks() <= net.chunks.len());
        assert!(net.sender.receivers() <= shoal_proto::mcast::sender::MAX_TRACKED_RECEIVERS);
    });
}

#[test]
fn a_forged_block_fails_the_hash_and_the_chunk_is_fetched_again() {
    let sc = Scenario { receivers: 8, max_loss: 100, forge: true, ..SMALL };
    simulate("forge", 100, sc, |net| {
        for (i, node) in net.nodes.iter().enumerate() {
            assert!(node.failed >= 1, "seed {}: receiver {i} never saw the forged chunk fail", net.seed);
        }
    });
}

#[test]
fn mutated_datagrams_of_a_real_session_never_panic_either_machine() {
    let mut net = Net::new(7, Scenario { receivers: 3, max_loss: 200, ..SMALL });
    net.recorded = Some(Vec::new());
    net.run();
    let recorded = net.recorded.take().expect("recording was on");
    let sizes: Vec<u32> = net.chunks.iter().map(|c| c.len() as u32).collect();
    let mut rng = Rng(99);
    let mut now = Time::ZERO;
    let mut tx = Sender::new(SenderConfig::new(1_000_000), SESSION, sizes.clone(), now).expect("valid sender");
    let config = ReceiverConfig { max_held_chunks: 2, ..ReceiverConfig::default() };
    let rx = Receiver::new(config, SESSION, ReceiverId(1), sizes.clone(), 0..sizes.len() as u32, 3, now);
    let mut rx = rx.expect("valid receiver");
    let mut buf = Vec::new();
    for _ in 0..20_000 {
        let mut dgram = recorded[(rng.next() % recorded.len() as u64) as usize].to_vec();
        match rng.next() % 4 {
            0 => dgram.truncate((rng.next() % (dgram.len() as u64 + 1)) as usize),
            1 => dgram.extend((0..rng.range(1, 8)).map(|_| rng.next() as u8)),
            _ => {
                for _ in 0..rng.range(1, 4) {
                    let at = (rng.next() % dgram.len() as u64) as usize;
                    dgram[at] = rng.next() as u8;
                }
            }
        }
        now = now + Duration::from_micros(rng.range(0, 3000));
        tx.handle(now, addr(2), &dgram);
        rx.handle(now, addr(2), &dgram);
        tx.handle_timeout(now);
        rx.handle_timeout(now);
        while tx.poll().is_some() {}
        while let Some(e) = rx.poll() {
            if let RxEvent::Chunk { index, bytes } = e {
                assert_eq!(bytes.len(), sizes[index as usize] as usize);
                // Whatever arrived, the hash decides.
                if ChunkHash::of(&bytes) == net.hashes[index as usize] {
                    rx.chunk_done(now, index);
                } else {
                    rx.chunk_failed(now, index);
                }
            }
        }
        while tx.poll_transmit(now, &mut buf).is_some() {}
        while rx.poll_transmit(now, &mut buf).is_some() {}
        assert!(rx.held_chunks() <= 2);
    }
    let (st, rs) = (tx.stats(), rx.stats());
    assert!(st.malformed > 0 && rs.malformed > 0 && rs.invalid > 0, "{st:?} {rs:?}");
}
