//! Chunks from untrusted bytes: the structural decoder and the bounded
//! decompression behind it must never panic or allocate past a window.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::chunk;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = chunk::decode(data) {
        let mut z = zstd::bulk::Decompressor::new().unwrap();
        if let Ok(out) = z.decompress(view.frame, view.raw_len as usize) {
            assert!(out.len() <= view.raw_len as usize);
        }
    }
});
