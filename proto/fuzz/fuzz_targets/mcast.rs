//! Multicast packets from untrusted bytes: the decoder must never panic and
//! what it accepts must re-encode to the same bytes; a sender and a
//! receiver fed the same datagrams through `handle`, with timeouts, events
//! and transmits driven in between, must never panic either.
//!
//! The input is a list of datagrams, each a little-endian `u16` length then
//! that many bytes. A datagram whose length field is odd gets the session id
//! under test written over its header, so mutations reach past the session
//! check; the length field also paces the clock and picks verdicts.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shoal_proto::mcast::receiver::Event;
use shoal_proto::mcast::{Packet, Receiver, ReceiverConfig, ReceiverId, Sender, SenderConfig, SessionId, Time};

const SESSION: SessionId = SessionId(0x5e55);
const SIZES: [u32; 4] = [1, 1408, 5000, 40_000];

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        assert_eq!(p.encode(), data);
    }
    let from = SocketAddr::from(([10, 0, 0, 2], 7000));
    let mut now = Time::ZERO;
    let mut tx = Sender::new(SenderConfig::new(1_000_000), SESSION, SIZES.to_vec(), now).unwrap();
    let config = ReceiverConfig { max_held_chunks: 2, ..ReceiverConfig::default() };
    let mut rx = Receiver::new(config, SESSION, ReceiverId(1), SIZES.to_vec(), 0..4, 7, now).unwrap();
    let mut buf = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]);
        let tail = &rest[2..];
        let n = usize::from(len).min(tail.len());
        let mut dgram = tail[..n].to_vec();
        rest = &tail[n..];
        if len % 2 == 1 && dgram.len() >= 14 {
            dgram[6..14].copy_from_slice(&SESSION.0.to_le_bytes());
        }
        now = now + Duration::from_millis(u64::from(len % 16));
        tx.handle(now, from, &dgram);
        rx.handle(now, from, &dgram);
        tx.handle_timeout(now);
        rx.handle_timeout(now);
        while tx.poll().is_some() {}
        while let Some(e) = rx.poll() {
            if let Event::Chunk { index, bytes } = e {
                assert_eq!(bytes.len(), SIZES[index as usize] as usize);
                if len % 4 == 1 {
                    rx.chunk_failed(now, index);
                } else {
                    rx.chunk_done(now, index);
                }
            }
        }
        while let Some(t) = tx.poll_transmit(now, &mut buf) {
            assert_eq!(t.size, buf.len());
        }
        while rx.poll_transmit(now, &mut buf).is_some() {}
        assert!(rx.held_chunks() <= 2);
    }
});
