//! Decoders fed arbitrary and mutated bytes must return errors, never panic,
//! and anything they accept must re-encode to the same bytes. The fuzz
//! targets in `proto/fuzz` run the same checks under libFuzzer; inputs it
//! found are kept in `proto/fuzz/regressions` and replayed here.

use proptest::prelude::*;
use shoal_proto::chunk::{self, ChunkEncoder, Extent};
use shoal_proto::manifest::{Manifest, SignedManifest};

fn check_manifest(bytes: &[u8]) {
    if let Ok(m) = Manifest::decode(bytes) {
        assert_eq!(m.encode(), bytes, "accepted manifest is not canonical");
    }
    if let Ok(s) = SignedManifest::from_bytes(bytes) {
        assert_eq!(s.to_bytes(), bytes);
        let _ = s.verify(&[s.signer()]);
    }
}

fn check_chunk(bytes: &[u8]) {
    if let Ok(view) = chunk::decode(bytes) {
        let mut z = zstd::bulk::Decompressor::new().unwrap();
        let _ = z.decompress(view.frame, view.raw_len as usize);
    }
}

fn valid_manifest() -> Vec<u8> {
    let c = ChunkEncoder::new(1).unwrap().encode(&[Extent { offset: 0, len: 512 }], &[7; 512]).unwrap();
    let m = Manifest {
        id: shoal_proto::ImageId([1; 16]),
        name: "n".into(),
        version: "1".into(),
        arch: "x86_64".into(),
        stamp: String::new(),
        created: 0,
        description: String::new(),
        author: String::new(),
        base: None,
        kind: shoal_proto::manifest::ImageKind::WholeDisk,
        source_size: 1 << 30,
        sector_size: 512,
        window_size: shoal_proto::WINDOW_SIZE,
        table: None,
        segments: vec![shoal_proto::manifest::Segment {
            partition: None,
            size: 1 << 30,
            fs: shoal_proto::manifest::FsKind::Unknown,
            chunks: vec![shoal_proto::manifest::ChunkRef {
                window: 3,
                hash: c.hash,
                raw_hash: c.raw_hash,
                csize: c.bytes.len() as u32,
                rsize: 512,
                extents: c.extents,
            }],
            zero: vec![],
        }],
        expires: None,
    };
    m.encode()
}

fn valid_chunk() -> Vec<u8> {
    let data: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 13) as u8).collect();
    let ex = [Extent { offset: 4096, len: 4000 }, Extent { offset: 10000, len: 5000 }];
    ChunkEncoder::new(3).unwrap().encode(&ex, &data).unwrap().bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_manifest(&bytes);
        check_chunk(&bytes);
    }

    #[test]
    fn mutated_manifests_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = valid_manifest();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        check_manifest(&bytes);
    }

    #[test]
    fn mutated_chunks_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = valid_chunk();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        check_chunk(&bytes);
    }
}

#[test]
fn fuzz_regressions_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for (dir, check) in [("manifest", check_manifest as fn(&[u8])), ("chunk", check_chunk)] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            check(&std::fs::read(&path).unwrap());
        }
    }
}

#[test]
fn proto_depends_on_no_async_runtime() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "shoal-proto", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    for banned in ["tokio ", "mio ", "async-std "] {
        assert!(!tree.contains(banned), "shoal-proto depends on {banned}:\n{tree}");
    }
}
