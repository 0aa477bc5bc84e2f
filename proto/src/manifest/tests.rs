use super::*;

pub(crate) fn sample() -> Manifest {
    let chunk = |window: u64, b: u8| ChunkRef {
        window,
        hash: ChunkHash([b; 32]),
        raw_hash: RawHash([b ^ 0xff; 32]),
        csize: 100,
        rsize: 8192,
        extents: vec![Extent { offset: 0, len: 4096 }, Extent { offset: 8192, len: 4096 }],
    };
    Manifest {
        id: ImageId([1; 16]),
        name: "debian12-std".into(),
        version: "3".into(),
        arch: "x86_64".into(),
        stamp: "build-77".into(),
        created: 1_790_000_000,
        description: "a test image".into(),
        author: "ops@example.org".into(),
        base: Some(ImageId([2; 16])),
        kind: ImageKind::WholeDisk,
        source_size: 3 << 40,
        sector_size: 512,
        window_size: WINDOW_SIZE,
        table: Some(PartitionTable {
            kind: TableKind::Gpt,
            disk_id: vec![9; 16],
            partitions: vec![Partition {
                number: 1,
                start: 1 << 20,
                size: (3 << 40) - (2 << 20),
                ptype: PartType::Gpt([3; 16]),
                guid: Some([4; 16]),
                name: "root".into(),
                bootable: false,
                fs: FsKind::Ext4,
                fs_label: "root".into(),
                os: Some("debian-12".into()),
            }],
        }),
        segments: vec![Segment {
            partition: None,
            size: 3 << 40,
            fs: FsKind::Unknown,
            // Past 2 TiB: offsets are 64-bit throughout.
            chunks: vec![chunk(0, 1), chunk(1, 2), chunk((5 << 40) / (2 * WINDOW_SIZE), 3)],
            zero: vec![ByteRange { start: 1 << 41, len: 4096 }],
        }],
        expires: None,
    }
}

#[test]
fn manifest_round_trips_through_canonical_bytes() {
    let m = sample();
    let bytes = m.encode();
    let back = Manifest::decode(&bytes).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.encode(), bytes);
}

#[test]
fn every_truncation_of_a_manifest_is_refused() {
    let bytes = sample().encode();
    for n in 0..bytes.len() {
        assert!(Manifest::decode(&bytes[..n]).is_err(), "prefix of {n} bytes accepted");
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = sample().encode();
    bytes.push(0);
    assert!(Manifest::decode(&bytes).is_err());
}

#[test]
fn chunks_out_of_window_order_are_refused() {
    let mut m = sample();
    m.segments[0].chunks.swap(0, 1);
    assert!(Manifest::decode(&m.encode()).is_err());
}

#[test]
fn a_chunk_past_the_segment_is_refused() {
    let mut m = sample();
    m.segments[0].size = WINDOW_SIZE + 100;
    m.source_size = m.segments[0].size;
    m.table = None;
    m.segments[0].chunks.truncate(2);
    m.segments[0].zero.clear();
    assert!(Manifest::decode(&m.encode()).is_err());
}

#[test]
fn a_partition_past_the_disk_is_refused() {
    let mut m = sample();
    m.table.as_mut().unwrap().partitions[0].size = 3 << 40;
    assert!(Manifest::decode(&m.encode()).is_err());
}

#[test]
fn signature_verifies_with_the_right_key_only() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let other = SigningKey::from_bytes(&[6; 32]);
    let signed = SignedManifest::sign(&sample(), &key);
    let me = KeyId(key.verifying_key().to_bytes());
    let them = KeyId(other.verifying_key().to_bytes());
    let bytes = signed.to_bytes();
    let back = SignedManifest::from_bytes(&bytes).unwrap();
    assert_eq!(back.verify(&[me]).unwrap().manifest, sample());
    assert!(matches!(back.verify(&[them]), Err(SignatureError::UntrustedKey(_))));
}

#[test]
fn a_tampered_manifest_fails_its_signature() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let me = KeyId(key.verifying_key().to_bytes());
    let bytes = SignedManifest::sign(&sample(), &key).to_bytes();
    // Flip a byte inside the manifest body, the signer and the signature.
    for i in [40, bytes.len() - 80, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 1;
        let res = SignedManifest::from_bytes(&bad).map(|s| s.verify(&[me]));
        assert!(!matches!(res, Ok(Ok(_))), "tampered byte {i} accepted");
    }
}
