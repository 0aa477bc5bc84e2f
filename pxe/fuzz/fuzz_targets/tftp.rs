//! TFTP from untrusted bytes: the packet decoder must never panic and what
//! it accepts must re-encode to the same packet; a read transfer fed any
//! sequence of datagrams, wrong-port datagrams and timeouts must never
//! panic, overrun its buffer or run on after it finished. The checks live
//! in `harness.rs`, which `pxe/tests/tftp.rs` also replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../harness.rs");

fuzz_target!(|data: &[u8]| {
    check(data);
});
