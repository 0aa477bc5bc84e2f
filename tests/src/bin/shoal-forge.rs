//! A hostile host for the multicast tests: joins a live session's group the
//! way any host on the segment can, and for a while sends it random bytes
//! and well-formed blocks with wrong data. Receivers must count and ignore
//! all of it.
//!
//! usage: shoal-forge SESSION GROUP PORT IFACE SECONDS CSIZE,CSIZE,...
//! (CSIZE: each chunk's encoded size, from the manifest, so forged blocks
//! have the right counts and lengths and reach the receivers' hash checks)

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use shoal_proto::mcast::wire::{block_count, block_span, encode_block_header};
use shoal_proto::mcast::SessionId;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, session, group, port, iface, secs, sizes] = args.as_slice() else {
        eprintln!("usage: shoal-forge SESSION GROUP PORT IFACE SECONDS CSIZE,CSIZE,...");
        std::process::exit(2);
    };
    let session = SessionId(session.parse().expect("session id"));
    let group: Ipv4Addr = group.parse().expect("group");
    let port: u16 = port.parse().expect("port");
    let iface: Ipv4Addr = iface.parse().expect("iface");
    let sizes: Vec<u32> = sizes.split(',').map(|s| s.parse().expect("chunk size")).collect();
    let until = Instant::now() + Duration::from_secs(secs.parse().expect("seconds"));
    let sock = UdpSocket::bind((iface, 0)).expect("bind");
    let to = SocketAddrV4::new(group, port);
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut sent = 0u64;
    while Instant::now() < until {
        // Random junk of random length.
        let len = (next() % 1400) as usize;
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = sock.send_to(&junk, to);
        // A well-formed block of a real chunk, with wrong bytes.
        let chunk = (next() % sizes.len() as u64) as u32;
        let csize = sizes[chunk as usize];
        let count = block_count(csize);
        let index = (next() % u64::from(count)) as u32;
        let Some((_, len)) = block_span(csize, index) else { continue };
        let mut pkt = encode_block_header(session, chunk, index, count, len);
        pkt.extend((0..len).map(|_| next() as u8));
        let _ = sock.send_to(&pkt, to);
        sent += 2;
        std::thread::sleep(Duration::from_micros(500));
    }
    println!("{sent}");
}
