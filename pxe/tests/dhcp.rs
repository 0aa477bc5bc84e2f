//! DHCP: the decoder on malformed and mutated input, the responder's
//! decisions driven byte for byte, the server over 127.0.0.1 on ephemeral
//! ports (proxy mode, iPXE, bad input and floods), and busybox `udhcpc`
//! against the server inside network namespaces (`dhcp/udhcpc.rs`).

#[path = "dhcp/fixture.rs"]
mod fixture;
#[path = "dhcp/udhcpc.rs"]
mod udhcpc;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{relay, DhcpOption, MessageType};
use fixture::*;
use shoal_pxe::dhcp::packet::{self, ClientArch, ClientClass, MessageKind, PacketError};
use shoal_pxe::dhcp::{
    Config, Destination, DropReason, Event, FullConfig, Incoming, Listener, Mac, NodeBoot, PoolRange, Responder,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const NODE: Mac = Mac([2, 0, 0, 0, 0, 0x21]);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 21);
const STRANGER: Mac = Mac([2, 0, 0, 0, 0, 0x99]);

fn nodes() -> HashMap<Mac, NodeBoot> {
    HashMap::from([(NODE, NodeBoot { ip: Some(NODE_IP), hostname: Some("pc21".into()), network_boot: true })])
}

fn full(pool: bool) -> Config {
    Config::full(
        SERVER,
        FullConfig {
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            routers: vec![SERVER],
            dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
            domain: Some("test.shoal".into()),
            lease_time: Duration::from_secs(600),
            pool: pool.then_some(PoolRange { first: Ipv4Addr::new(10, 0, 0, 100), last: Ipv4Addr::new(10, 0, 0, 101) }),
        },
    )
}

// ---- the decoder ----------------------------------------------------------

#[test]
fn decoder_reads_a_pxe_discover_built_with_dhcproto() {
    let req = packet::decode(&pxe_discover(NODE, 7)).unwrap();
    assert_eq!(req.kind, MessageKind::Discover);
    assert_eq!(req.mac, NODE);
    assert_eq!(req.arch, Some(ClientArch::EFI_BC));
    assert_eq!(req.class, ClientClass::Pxe);
    assert_eq!(req.guid.map(|g| g.0), Some([0x11; 16]));
    assert!(req.broadcast && !req.ipxe);
}

#[test]
fn decoder_refuses_every_truncation() {
    let bytes = pxe_discover(NODE, 0);
    for n in 0..bytes.len() {
        assert!(packet::decode(&bytes[..n]).is_err(), "accepted {n} of {} bytes", bytes.len());
    }
}

#[test]
fn decoder_refuses_options_81_and_151_to_155_that_dhcproto_would_assert_on() {
    let cases: &[&[&[u8]]] = &[
        &[&[81, 0]],
        &[&[81, 2, 0, 0]],
        &[&[81, 1, 0], &[81, 1, 0]], // split per RFC 3396, still two bytes
        &[&[151, 0]],
        &[&[152, 2, 0, 0]],
        &[&[153, 3, 0, 0, 0]],
        &[&[154, 0]],
        &[&[155, 5, 0, 0, 0, 0, 0]],
        &[&[80, 1, 0]],
        &[&[94, 2, 1, 2]],
    ];
    for opts in cases {
        let mut all = vec![&[53u8, 1, 1][..]];
        all.extend_from_slice(opts);
        let got = packet::decode(&raw_request(NODE, &all));
        assert!(matches!(got, Err(PacketError::OptionLength { .. })), "{opts:?}: {got:?}");
    }
}

#[test]
fn decoder_refuses_bad_lengths_of_the_options_it_reads() {
    let cases: &[&[u8]] = &[
        &[50, 3, 10, 0, 0],
        &[54, 5, 10, 0, 0, 1, 0],
        &[57, 2, 0, 100],
        &[61, 1, 1],
        &[93, 3, 0, 0, 7],
        &[97, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[82, 4, 1, 5, 0, 0],
        &[82, 6, 5, 3, 10, 0, 0, 1],
    ];
    for opt in cases {
        let got = packet::decode(&raw_request(NODE, &[&[53, 1, 1], opt]));
        let refused = matches!(
            got,
            Err(PacketError::OptionLength { .. } | PacketError::OptionValue(_) | PacketError::Structure(_))
        );
        assert!(refused, "{opt:?}: {got:?}");
    }
}

#[test]
fn decoder_refuses_oversized_overloaded_repeated_and_misshapen_packets() {
    let mut big = pxe_discover(NODE, 0);
    big.resize(packet::MAX_PACKET + 1, 0);
    assert_eq!(packet::decode(&big), Err(PacketError::Oversized(packet::MAX_PACKET + 1)));
    let d = |opts: &[&[u8]]| packet::decode(&raw_request(NODE, opts));
    assert_eq!(d(&[&[53, 1, 1], &[52, 1, 3]]), Err(PacketError::Overload));
    assert_eq!(d(&[&[53, 1, 1], &[60, 1, b'a'], &[12, 1, b'h'], &[60, 1, b'b']]), Err(PacketError::RepeatedOption(60)));
    assert_eq!(d(&[&[12, 1, b'h']]), Err(PacketError::NoMessageType));
    assert_eq!(d(&[&[53, 1, 2]]), Err(PacketError::MessageType(2)));
    assert!(matches!(d(&[&[53, 1, 1], &[3, 200, 1]]), Err(PacketError::Structure(_))), "option past the end");
    let mut trailing = raw_request(NODE, &[&[53, 1, 1]]);
    trailing.extend_from_slice(&[0, 0, 7]);
    assert!(matches!(packet::decode(&trailing), Err(PacketError::Structure(_))));
    let mut padded = raw_request(NODE, &[&[53, 1, 1]]);
    padded.resize(300, 0);
    assert!(packet::decode(&padded).is_ok(), "zero padding after the end option is normal");
    let mut long_hw = raw_request(NODE, &[&[53, 1, 1]]);
    long_hw[2] = 17;
    assert_eq!(packet::decode(&long_hw), Err(PacketError::Hardware { htype: 1, hlen: 17 }));
    let mut reply = raw_request(NODE, &[&[53, 1, 1]]);
    reply[0] = 2;
    assert_eq!(packet::decode(&reply), Err(PacketError::NotRequest));
    // An IPv4 list that is not a multiple of four: dhcproto stops there.
    assert!(matches!(d(&[&[53, 1, 1], &[3, 3, 1, 2, 3]]), Err(PacketError::Decoder(_))));
}

/// xorshift64*: a seeded generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid packets with many options, mutated in their option area with
/// bytes that matter to DHCP (codes, lengths, pad, end).
struct Mutator {
    rng: Rng,
    seeds: Vec<Vec<u8>>,
}

impl Mutator {
    fn new(seed: u64) -> Self {
        let seeds = vec![
            pxe_discover(NODE, 0),
            request(NODE, MessageType::Request, vec![DhcpOption::UserClass(b"iPXE".to_vec())]),
            raw_request(
                NODE,
                &[&[53, 1, 1], &[81, 3, 0, 0, 0], &[151, 1, 0], &[152, 4, 0, 0, 0, 1], &[82, 3, 1, 1, 9]],
            ),
            raw_request(NODE, &[&[53, 1, 3], &[50, 4, 10, 0, 0, 21], &[54, 4, 10, 0, 0, 1], &[93, 2, 0, 7]]),
        ];
        Mutator { rng: Rng(seed), seeds }
    }

    fn next(&mut self) -> Vec<u8> {
        const INTERESTING: [u8; 21] =
            [0, 1, 2, 3, 4, 6, 17, 52, 53, 80, 81, 82, 93, 94, 97, 151, 152, 153, 154, 155, 255];
        let rng = &mut self.rng;
        let mut b = self.seeds[rng.below(self.seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = 236 + rng.below(b.len().saturating_sub(236));
            let last = b.len() - 1;
            let byte = INTERESTING[rng.below(INTERESTING.len())];
            match rng.below(4) {
                0 => b[at.min(last)] = byte,
                1 => b.insert(at, byte),
                2 if b.len() > 240 => drop(b.remove(at.min(last))),
                _ => b.truncate(at.max(240)),
            }
        }
        b
    }
}

#[test]
fn decoder_survives_mutations_without_needing_its_catch_unwind() {
    let mut m = Mutator::new(0x005e_ed0f_d4c9);
    for _ in 0..60_000 {
        let b = m.next();
        assert_ne!(packet::decode(&b), Err(PacketError::DecoderPanic), "pre-scan let through {b:?}");
    }
}

mod harness {
    include!("../fuzz/dhcp_harness.rs");
}

#[test]
fn fuzz_regressions_and_mutated_packets_pass_the_fuzz_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/dhcp");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("regressions dir") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(packet::decode(&bytes).is_err(), "{} is accepted", path.display());
        harness::check(&bytes);
        replayed += 1;
    }
    assert!(replayed > 0);
    let mut m = Mutator::new(7);
    for _ in 0..3_000 {
        harness::check(&m.next());
    }
}

// ---- the responder, sans IO --------------------------------------------------

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn from_client() -> Incoming {
    Incoming { via: Listener::Dhcp, src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68) }
}

fn responder(cfg: Config) -> Responder {
    Responder::new(cfg, Arc::new(nodes())).unwrap()
}

fn answer(r: &mut Responder, bytes: &[u8]) -> Option<(Destination, dhcproto::v4::Message)> {
    r.handle(now(), from_client(), bytes);
    r.poll_transmit().map(|t| (t.dest, parse(&t.bytes)))
}

#[test]
fn renewal_is_acked_unicast_to_the_clients_address() {
    let mut r = responder(full(false));
    let mut msg = parse(&request(NODE, MessageType::Request, vec![]));
    msg.set_ciaddr(NODE_IP);
    let (dest, reply) = answer(&mut r, &dhcproto::Encodable::to_vec(&msg).unwrap()).expect("ack");
    assert_eq!(reply_type(&reply), Some(MessageType::Ack));
    assert_eq!(reply.yiaddr(), NODE_IP);
    assert_eq!(dest, Destination::Unicast(SocketAddrV4::new(NODE_IP, 68)));
}

#[test]
fn relayed_discover_is_answered_to_the_relay_with_its_option_82() {
    let mut r = responder(full(false));
    let mut info = relay::RelayAgentInformation::default();
    info.insert(relay::RelayInfo::AgentCircuitId(b"port7".to_vec()));
    let mut msg = parse(&request(NODE, MessageType::Discover, vec![DhcpOption::RelayAgentInformation(info.clone())]));
    msg.set_giaddr(Ipv4Addr::new(10, 0, 0, 254));
    let (dest, reply) = answer(&mut r, &dhcproto::Encodable::to_vec(&msg).unwrap()).expect("offer");
    assert_eq!(dest, Destination::Unicast(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 254), 67)));
    assert_eq!(reply.giaddr(), Ipv4Addr::new(10, 0, 0, 254));
    assert_eq!(
        reply.opts().get(dhcproto::v4::OptionCode::RelayAgentInformation),
        Some(&DhcpOption::RelayAgentInformation(info))
    );
}

#[test]
fn init_reboot_for_the_wrong_address_is_naked_by_broadcast() {
    let mut r = responder(full(false));
    let bytes = request(NODE, MessageType::Request, vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 77))]);
    let (dest, reply) = answer(&mut r, &bytes).expect("nak");
    assert_eq!(reply_type(&reply), Some(MessageType::Nak));
    assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(dest, Destination::Broadcast { port: 68 });
}

#[test]
fn pool_leases_are_reported_for_saving_and_restored_into_a_new_responder() {
    let mut r = responder(full(true));
    let (_, offer) = answer(&mut r, &request(STRANGER, MessageType::Discover, vec![])).expect("offer");
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!(r.poll(), None, "an offer is not persisted");
    let req = request(
        STRANGER,
        MessageType::Request,
        vec![DhcpOption::ServerIdentifier(SERVER), DhcpOption::RequestedIpAddress(offer.yiaddr())],
    );
    let (_, ack) = answer(&mut r, &req).expect("ack");
    assert_eq!(reply_type(&ack), Some(MessageType::Ack));
    assert_eq!(r.poll(), Some(Event::LeasesChanged));
    let mut again = responder(full(true));
    again.restore_leases(&r.lease_bytes().unwrap()).unwrap();
    let (_, other) = answer(&mut again, &request(Mac([2, 0, 0, 0, 0, 0x98]), MessageType::Discover, vec![])).unwrap();
    assert_eq!(other.yiaddr(), Ipv4Addr::new(10, 0, 0, 101), "the restored lease is not handed out again");
}

#[test]
fn a_flood_from_one_mac_is_rate_limited_while_other_macs_are_served() {
    let mut r = responder(full(true));
    let burst = r.config().rate_limit.burst as usize;
    let flood = request(NODE, MessageType::Discover, vec![]);
    let answered = (0..200).filter(|_| answer(&mut r, &flood).is_some()).count();
    assert_eq!(answered, burst);
    assert_eq!(r.counters().snapshot().dropped(DropReason::RateLimited), (200 - burst) as u64);
    let (_, offer) = answer(&mut r, &request(STRANGER, MessageType::Discover, vec![])).expect("another mac");
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 100));
}

// ---- the server on 127.0.0.1 --------------------------------------------------

const WAIT: Duration = Duration::from_secs(3);
const SILENCE: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_offers_pxe_clients_their_boot_file_and_no_address() {
    let lo = Loopback::start(Config::proxy(SERVER), nodes()).await;
    for (arch, file) in [(0, "undionly.kpxe"), (7, "ipxe.efi")] {
        let reply = lo.ask(lo.server, &pxe_discover(NODE, arch), WAIT).await.expect("proxy offer");
        assert_eq!(reply_type(&reply), Some(MessageType::Offer));
        assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED, "proxy mode never gives an address");
        assert_eq!(reply.siaddr(), SERVER);
        assert_eq!(boot_file(&reply).as_deref(), Some(file));
        assert_eq!(reply.fname(), Some(format!("{file}\0").as_bytes()));
        assert_eq!(vendor_class(&reply).as_deref(), Some(&b"PXEClient"[..]));
        assert!(reply.opts().get(dhcproto::v4::OptionCode::AddressLeaseTime).is_none());
        assert!(reply.opts().get(dhcproto::v4::OptionCode::ClientMachineIdentifier).is_some(), "guid echoed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_ignores_a_discover_without_the_pxe_vendor_class() {
    let lo = Loopback::start(Config::proxy(SERVER), nodes()).await;
    let plain = request(NODE, MessageType::Discover, vec![DhcpOption::ClassIdentifier(b"udhcp 1.35".to_vec())]);
    assert!(lo.ask(lo.server, &plain, SILENCE).await.is_none());
    assert_eq!(lo.snapshot().dropped(DropReason::NotPxe), 1);
    assert_eq!(lo.snapshot().offers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_boot_port_acks_a_pxe_request_with_the_boot_file() {
    let lo = Loopback::start(Config::proxy(SERVER), nodes()).await;
    let req = request(NODE, MessageType::Request, pxe_options(9));
    let reply = lo.ask(lo.proxy.expect("proxy port"), &req, WAIT).await.expect("proxy ack");
    assert_eq!(reply_type(&reply), Some(MessageType::Ack));
    assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(boot_file(&reply).as_deref(), Some("ipxe.efi"));
    // The same REQUEST on port 67 belongs to the site's DHCP server.
    assert!(lo.ask(lo.server, &req, SILENCE).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipxe_user_class_gets_the_script_url() {
    let lo = Loopback::start(Config::proxy(SERVER), nodes()).await;
    let mut opts = pxe_options(7);
    opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let reply = lo.ask(lo.server, &request(NODE, MessageType::Discover, opts), WAIT).await.expect("offer");
    assert_eq!(boot_file(&reply).as_deref(), Some("http://10.0.0.1/boot/02:00:00:00:00:21.ipxe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_and_a_flood_are_counted_and_the_next_request_is_answered() {
    let lo = Loopback::start(full(true), nodes()).await;
    let valid = pxe_discover(NODE, 0);
    let mut bad: Vec<Vec<u8>> = (0..240).step_by(7).map(|n| valid[..n].to_vec()).collect();
    for opt in
        [&[81u8, 1, 0][..], &[151, 0], &[152, 1, 0], &[153, 0], &[154, 2, 0, 0], &[155, 3, 0, 0, 0], &[53, 2, 1, 1]]
    {
        bad.push(raw_request(NODE, &[&[53, 1, 1], opt]));
    }
    let malformed = bad.len() as u64;
    let mut huge = valid.clone();
    huge.resize(1600, 0);
    bad.push(huge);
    let flood = vec![request(STRANGER, MessageType::Discover, vec![]); 100];
    // Paced a little, so that the socket buffer does not drop any.
    for (i, b) in bad.iter().chain(&flood).enumerate() {
        lo.client.send_to(b, lo.server).await.unwrap();
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let handled = |s: shoal_pxe::dhcp::CountersSnapshot| s.discover + s.dropped(DropReason::Malformed);
    assert!(eventually(WAIT, || handled(lo.snapshot()) == 100 + malformed), "{:?}", lo.snapshot());
    let reply = lo.ask_for(lo.server, &valid, NODE, WAIT).await.expect("still serving");
    assert_eq!(reply.yiaddr(), NODE_IP);
    let s = lo.snapshot();
    assert_eq!(s.dropped(DropReason::Malformed), malformed);
    assert_eq!(s.dropped(DropReason::Oversized), 1);
    assert_eq!(s.dropped(DropReason::DecoderPanic), 0);
    // The burst passes; refill during the flood may let one or two more by.
    let limited = s.dropped(DropReason::RateLimited);
    let burst = u64::from(full(true).rate_limit.burst);
    assert!((100 - burst - 2..=100 - burst).contains(&limited), "{limited} rate limited");
}
