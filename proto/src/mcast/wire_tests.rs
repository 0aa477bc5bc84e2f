//! Tests of the multicast wire codec: round trips, strictness, sizes, and
//! arbitrary or mutated bytes that must be refused without a panic.

use proptest::prelude::*;

use super::*;

const S: SessionId = SessionId(0x0123_4567_89ab_cdef);
const R: ReceiverId = ReceiverId(42);

fn ranges(rs: &[(u32, u32)]) -> IndexRanges {
    IndexRanges::from_ascending(rs.iter().flat_map(|&(s, e)| s..e))
}

fn samples() -> Vec<Packet<'static>> {
    static FULL: [u8; BLOCK_SIZE] = [0xab; BLOCK_SIZE];
    let msgs = vec![
        Message::Join { receiver: R },
        Message::Leave { receiver: R },
        Message::RequestChunks { receiver: R, chunks: ranges(&[(0, 3), (7, 8), (100, 140)]) },
        Message::RequestBlocks { receiver: R, chunk: 9, blocks: ranges(&[(1, 2), (5, 9)]) },
        Message::Block(Block { chunk: 3, index: 0, count: 2, payload: &FULL }),
        Message::Block(Block { chunk: 3, index: 1, count: 2, payload: &FULL[..17] }),
        Message::Status(Status { seq: 5, rate: 12_500_000, chunks_total: 40, backlog: 900, repair_backlog: 30 }),
        Message::Report(Report {
            receiver: R,
            bytes_received: 1 << 33,
            duplicate_blocks: 3,
            requests_sent: 9,
            chunks_done: 40,
            done: true,
        }),
        Message::Busy { receiver: R },
    ];
    msgs.into_iter().map(|message| Packet { session: S, message }).collect()
}

#[test]
fn every_message_round_trips() {
    for p in samples() {
        let bytes = p.encode();
        assert_eq!(Packet::decode(&bytes).as_ref(), Ok(&p), "{p:?}");
        assert!(bytes.len() <= MAX_DATAGRAM);
    }
}

#[test]
fn every_truncation_and_every_extra_byte_is_rejected() {
    for p in samples() {
        let bytes = p.encode();
        for n in 0..bytes.len() {
            assert!(Packet::decode(&bytes[..n]).is_err(), "{p:?} truncated to {n} bytes was accepted");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Packet::decode(&long).is_err(), "{p:?} with a trailing byte was accepted");
    }
}

#[test]
fn unknown_magic_version_and_type_are_rejected() {
    let good = Packet { session: S, message: Message::Join { receiver: R } }.encode();
    for (at, value) in [(0, b'X'), (4, 2), (4, 0)] {
        let mut bad = good.clone();
        bad[at] = value;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadMagic("mcast packet")));
    }
    for kind in [0, 9, 255] {
        let mut bad = good.clone();
        bad[5] = kind;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::Invalid("mcast type")));
    }
}

fn request_with_raw_ranges(rs: &[(u32, u32)]) -> Vec<u8> {
    let mut w = Writer::new();
    header(&mut w, S, 3);
    w.u64(R.0);
    w.count(rs.len());
    for &(s, e) in rs {
        w.u32(s);
        w.u32(e);
    }
    w.into_bytes()
}

#[test]
fn ranges_must_be_non_empty_sorted_disjoint_and_not_adjacent() {
    assert!(Packet::decode(&request_with_raw_ranges(&[(0, 2), (3, 4)])).is_ok());
    for bad in [&[][..], &[(2, 2)], &[(3, 2)], &[(0, 4), (2, 6)], &[(5, 6), (0, 1)], &[(0, 2), (2, 4)]] {
        let bytes = request_with_raw_ranges(bad);
        assert_eq!(Packet::decode(&bytes), Err(DecodeError::Invalid("chunk ranges")), "{bad:?}");
    }
    let too_many: Vec<(u32, u32)> = (0..=MAX_RANGES).map(|i| (2 * i, 2 * i + 1)).collect();
    let bytes = request_with_raw_ranges(&too_many);
    assert!(matches!(Packet::decode(&bytes), Err(DecodeError::TooLong { .. } | DecodeError::Truncated(_))));
}

#[test]
fn from_ascending_merges_skips_and_stops_at_the_bound() {
    let r = IndexRanges::from_ascending([1, 2, 3, 3, 2, 7, 9, 10]);
    assert_eq!(r.ranges().collect::<Vec<_>>(), vec![1..4, 7..8, 9..11]);
    assert_eq!((r.len(), r.end()), (6, 11));
    let r = IndexRanges::from_ascending((0..1000).map(|i| i * 2));
    assert_eq!(r.ranges().count(), MAX_RANGES as usize);
    assert!(IndexRanges::from_ascending([u32::MAX]).is_empty());
    assert_eq!(IndexRanges::from_ascending([u32::MAX - 1, u32::MAX]).len(), 1);
}

fn block_bytes(index: u32, count: u32, len: usize) -> Vec<u8> {
    let mut bytes = encode_block_header(S, 1, index, count, len as u32);
    bytes.resize(bytes.len() + len, 7);
    bytes
}

#[test]
fn block_index_count_and_length_must_agree() {
    assert!(Packet::decode(&block_bytes(0, 1, 1)).is_ok());
    assert!(Packet::decode(&block_bytes(0, 2, BLOCK_SIZE)).is_ok());
    assert!(Packet::decode(&block_bytes(0, 2, BLOCK_SIZE - 1)).is_err(), "short block before the last");
    assert!(Packet::decode(&block_bytes(1, 1, 10)).is_err(), "index past the count");
    assert!(Packet::decode(&block_bytes(0, 0, 10)).is_err(), "zero count");
    assert!(Packet::decode(&block_bytes(0, MAX_BLOCKS + 1, BLOCK_SIZE)).is_err(), "count over the bound");
    assert!(Packet::decode(&block_bytes(0, 1, 0)).is_err(), "empty payload");
}

#[test]
fn a_status_cannot_claim_more_repairs_than_backlog() {
    let status = Status { seq: 0, rate: 1, chunks_total: 1, backlog: 1, repair_backlog: 2 };
    let bytes = Packet { session: S, message: Message::Status(status) }.encode();
    assert!(Packet::decode(&bytes).is_err());
}

#[test]
fn block_header_is_the_block_encoding_without_its_payload() {
    let payload = [9u8; 100];
    let full =
        Packet { session: S, message: Message::Block(Block { chunk: 4, index: 2, count: 3, payload: &payload }) };
    let mut bytes = encode_block_header(S, 4, 2, 3, 100);
    assert_eq!(bytes.len(), BLOCK_HEADER_LEN);
    bytes.extend_from_slice(&payload);
    assert_eq!(bytes, full.encode());
}

#[test]
fn block_spans_tile_the_chunk() {
    for csize in [1, 1407, 1408, 1409, 2816, 100_000] {
        let n = block_count(csize);
        let mut at = 0;
        for i in 0..n {
            let (offset, len) = block_span(csize, i).expect("index below the count");
            assert_eq!(offset, at);
            assert!(len >= 1 && len as usize <= BLOCK_SIZE);
            at += len;
        }
        assert_eq!(at, csize);
        assert_eq!(block_span(csize, n), None);
    }
    assert_eq!(block_span(10, u32::MAX), None);
    assert!(block_count(MAX_CHUNK_BYTES as u32) <= MAX_BLOCKS);
}

#[test]
fn the_largest_messages_fit_one_datagram() {
    let widest = IndexRanges::from_ascending((0..MAX_RANGES).map(|i| i * 2));
    let req = Packet { session: S, message: Message::RequestBlocks { receiver: R, chunk: 1, blocks: widest } };
    assert_eq!(req.encode().len(), MAX_REQUEST_LEN);
    assert!(Packet::decode(&vec![0; MAX_DATAGRAM + 1]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_ones_are_canonical(
        bytes in proptest::collection::vec(any::<u8>(), 0..1600)
    ) {
        if let Ok(p) = Packet::decode(&bytes) {
            prop_assert_eq!(p.encode(), bytes);
        }
    }

    #[test]
    fn mutated_packets_never_panic_and_accepted_ones_are_canonical(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = which.get(&samples()).encode();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(p) = Packet::decode(&bytes) {
            prop_assert_eq!(p.encode(), bytes);
        }
    }
}
