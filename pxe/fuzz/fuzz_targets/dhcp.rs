//! DHCP from untrusted bytes: the guarded decoder must never panic nor
//! lean on its `catch_unwind`; the policy must never answer with an empty
//! or over-long boot file, nor with a proxy answer in full mode; the
//! responder, in proxy and full mode, must send at most one well-formed
//! BOOTREPLY per datagram and never an address in proxy mode. The checks
//! live in `dhcp_harness.rs`, which `pxe/tests/dhcp.rs` also replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../dhcp_harness.rs");

fuzz_target!(|data: &[u8]| {
    check(data);
});
