use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{self, Message, MessageType};
use dhcproto::{Decodable, Decoder, Encodable};

use super::packet::tests::{reply, MAC};
use super::*;

const YI: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The message the client sends at `now`, decoded.
fn sent(c: &mut DhcpClient, now: Duration) -> Option<Message> {
    let mut buf = Vec::new();
    let n = c.poll_transmit(now, &mut buf)?;
    assert_eq!(n, buf.len());
    Some(Message::decode(&mut Decoder::new(&buf)).unwrap())
}

#[test]
fn discover_offer_request_ack_binds_with_the_acks_parameters() {
    let mut c = DhcpClient::new(MAC, 42, secs(0));
    let d = sent(&mut c, secs(0)).unwrap();
    assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
    assert!(sent(&mut c, secs(0)).is_none(), "nothing more until the backoff");
    c.handle(secs(0), &reply(MessageType::Offer, d.xid(), YI));
    let r = sent(&mut c, secs(0)).unwrap();
    assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
    c.handle(secs(0), &reply(MessageType::Ack, r.xid(), YI));
    let Some(Event::Bound(lease)) = c.poll() else { panic!("not bound") };
    assert_eq!(lease.addr, YI);
    assert_eq!(lease.prefix_len(), 24);
    assert_eq!(lease.router, Some(Ipv4Addr::new(10, 99, 0, 254)));
    assert_eq!(lease.server, Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(c.poll_timeout(), None);
    assert!(sent(&mut c, secs(100)).is_none());
}

#[test]
fn lost_discovers_are_resent_with_backoff() {
    let mut c = DhcpClient::new(MAC, 1, secs(0));
    let mut at = Vec::new();
    for t in 0..20 {
        if sent(&mut c, secs(t)).is_some() {
            at.push(t);
        }
    }
    assert_eq!(at, [0, 1, 3, 7, 11, 15, 19]);
    assert_eq!(c.poll_timeout(), Some(secs(23)));
}

#[test]
fn replies_for_another_transaction_or_mac_or_garbage_are_ignored() {
    let mut c = DhcpClient::new(MAC, 7, secs(0));
    sent(&mut c, secs(0));
    c.handle(secs(0), &reply(MessageType::Offer, 8, YI));
    let mut other = reply(MessageType::Offer, 7, YI);
    other[28] ^= 1; // chaddr
    c.handle(secs(0), &other);
    c.handle(secs(0), b"not dhcp");
    c.handle(secs(0), &reply(MessageType::Ack, 7, YI)); // an ACK before any offer
    assert_eq!(c.ignored, 4);
    assert!(sent(&mut c, secs(0)).is_none(), "still selecting, waiting for the backoff");
}

#[test]
fn a_nak_starts_over_with_a_new_transaction() {
    let mut c = DhcpClient::new(MAC, 7, secs(0));
    sent(&mut c, secs(0));
    c.handle(secs(0), &reply(MessageType::Offer, 7, YI));
    sent(&mut c, secs(0)).unwrap();
    c.handle(secs(1), &reply(MessageType::Nak, 7, Ipv4Addr::UNSPECIFIED));
    assert!(matches!(c.poll(), Some(Event::Nak { .. })));
    let d = sent(&mut c, secs(1)).unwrap();
    assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
    assert_eq!(d.xid(), 8);
}

#[test]
fn an_offer_whose_requests_go_unanswered_is_given_up() {
    let mut c = DhcpClient::new(MAC, 7, secs(0));
    sent(&mut c, secs(0));
    c.handle(secs(0), &reply(MessageType::Offer, 7, YI));
    let mut requests = 0;
    for t in 0..30 {
        c.handle_timeout(secs(t));
        if let Some(m) = sent(&mut c, secs(t)) {
            if m.opts().msg_type() == Some(MessageType::Discover) {
                assert_eq!(requests, MAX_REQUESTS);
                return;
            }
            requests += 1;
        }
    }
    panic!("never went back to DISCOVER");
}

#[test]
fn an_offer_without_a_server_id_is_ignored() {
    let any = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(7, any, YI, any, any, &MAC.0);
    m.set_opcode(v4::Opcode::BootReply);
    m.opts_mut().insert(v4::DhcpOption::MessageType(MessageType::Offer));
    let mut c = DhcpClient::new(MAC, 7, secs(0));
    sent(&mut c, secs(0));
    c.handle(secs(0), &m.to_vec().unwrap());
    assert_eq!(c.ignored, 1);
}
