//! Manifests and signed envelopes from untrusted bytes: decode must never
//! panic, and whatever it accepts must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::manifest::{Manifest, SignedManifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(s) = SignedManifest::from_bytes(data) {
        assert_eq!(s.to_bytes(), data);
        let _ = s.verify(&[s.signer()]);
    }
});
